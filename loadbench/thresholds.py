"""Thresholds and SLOs: pass/fail rules checked against the stages of a result file.

A threshold is a tiny expression, as in k6: ``ttft.p95<500ms``, ``error_rate<1%``,
``requests_per_s>=5``. It comes from ``--threshold`` on the command line or from the
scenario's ``[slo]`` table (every SLO limit is an upper bound, ``<=``). Checking is a pure
function of a stage dict as :mod:`loadbench.results.file` writes it, so a threshold can be
applied again to any result file, long after the run.

Units inside a threshold: latencies in ms, ``error_rate`` a fraction 0..1, throughputs
per second. A metric a stage does not measure at all (``schedule_lag`` in a closed-loop
stage, ``goodput_rps`` in a run without per-request limits) is *not applicable*: it passes,
with a reason. A metric the stage measures but has no value for (TTFT when every request
failed) fails: there is no evidence that the promise held.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from loadbench.errors import UsageError, show
from loadbench.metrics import decode, percentile_ms, summarize

__all__ = [
    "GRAMMAR",
    "LATENCY_METRICS",
    "RATE_METRICS",
    "Op",
    "Threshold",
    "ThresholdResult",
    "evaluate",
    "format_threshold",
    "parse_metric",
    "parse_threshold",
    "slo_request_limits",
    "slo_thresholds",
    "stage_value",
]


class Op(StrEnum):
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


LATENCY_METRICS = ("ttft", "itl", "tpot", "e2e", "ttft_raw", "e2e_raw", "schedule_lag")
RATE_METRICS = ("error_rate", "requests_per_s", "output_tokens_per_s", "goodput_rps")
OPEN_LOOP_ONLY = ("ttft_raw", "e2e_raw", "schedule_lag")
PER_REQUEST_METRICS = ("ttft", "itl", "tpot", "e2e")  # what the engine can judge per request
STORED_STATS = ("p50", "p90", "p95", "p99", "mean", "min", "max")  # in latency_ms

GRAMMAR = """\
A threshold is METRIC[.STAT] OP NUMBER[UNIT], for example:
  ttft.p95<500ms   itl.p99 <= 0.1s   e2e.max<8000   error_rate<1%   requests_per_s>=5
METRIC  latencies, which need a .STAT; the number is in us, ms (the default) or s:
          ttft, itl, tpot, e2e, ttft_raw, e2e_raw, schedule_lag
        rates, which take no .STAT:
          error_rate (a fraction 0..1, or N%), requests_per_s, output_tokens_per_s,
          goodput_rps (per second; /s is optional)
STAT    p50, p90, p95, p99, p99.9 (any pN with 0 < N < 100), mean, min, max
OP      <, <=, >, >="""

_OPS: dict[Op, Callable[[float, float], bool]] = {
    Op.LT: operator.lt,
    Op.LE: operator.le,
    Op.GT: operator.gt,
    Op.GE: operator.ge,
}
_OP_RE = re.compile(r"<=|>=|==|!=|=<|=>|<|>|=")
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_RIGHT_RE = re.compile(rf"({_NUMBER})\s*(\S*)")
_PERCENTILE_RE = re.compile(r"p([0-9]+(?:\.[0-9]+)?)")
_LATENCY_UNITS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class Threshold:
    """One rule. ``value`` is in ms for latencies, a fraction for ``error_rate``, per
    second for throughputs; ``source`` is the expression as the user wrote it."""

    metric: str
    stat: str | None
    op: Op
    value: float
    source: str

    @property
    def name(self) -> str:
        """``METRIC[.STAT]``, as ``--metric`` and reports spell it."""
        return self.metric if self.stat is None else f"{self.metric}.{self.stat}"

    @property
    def percentile(self) -> float | None:
        """0-100 for a ``pN`` statistic, else None."""
        return _percentile(self.stat)

    def check(self, stage: Mapping[str, Any]) -> ThresholdResult:
        found = _lookup(stage, self.metric, self.stat)
        if found.value is None:
            return ThresholdResult(self, None, not found.applicable, found.reason)
        return ThresholdResult(self, found.value, _OPS[self.op](found.value, self.value), None)


@dataclass(frozen=True)
class ThresholdResult:
    """``actual`` is None when the stage has no value: then ``reason`` says why, and
    ``passed`` says whether that counts as not applicable (True) or as a failure."""

    threshold: Threshold
    actual: float | None
    passed: bool
    reason: str | None

    def describe(self) -> str:
        """One line for a report: ``ttft.p95<500ms: 616.4 ms``."""
        source = self.threshold.source.strip()
        if self.actual is None:
            return f"{source}: {self.reason}"
        return f"{source}: {_show_value(self.threshold.metric, self.actual)}"


def _show_value(metric: str, value: float) -> str:
    if metric in LATENCY_METRICS:
        return f"{value:g} ms"
    if metric == "error_rate":
        return f"{value * 100:.4g}%"
    return f"{value:g}/s"


# -- parsing -------------------------------------------------------------------------------


def _percentile(stat: str | None) -> float | None:
    if stat is None:
        return None
    m = _PERCENTILE_RE.fullmatch(stat)
    return float(m.group(1)) if m else None


def _stat_problem(stat: str) -> str | None:
    """None when ``stat`` is valid; it must already be lower-case and canonical."""
    if stat in ("mean", "min", "max"):
        return None
    m = _PERCENTILE_RE.fullmatch(stat)
    if m is None:
        return f"unknown statistic {stat!r}"
    if not 0.0 < float(m.group(1)) < 100.0:
        return f"percentile {stat!r} is out of range: use 0 < N < 100 (or min, max)"
    return None


def _canonical_stat(stat: str) -> str:
    """``p95.0`` and ``p095`` are ``p95``, so they find the stored value."""
    m = _PERCENTILE_RE.fullmatch(stat)
    return f"p{_number_text(float(m.group(1)))}" if m else stat


def _unknown(word: str, known: Sequence[str], what: str) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {word!r}{hint}"


def _metric_problem(text: str) -> tuple[str, str | None, str | None]:
    """(metric, stat, problem) from ``METRIC[.STAT]``, lower-cased and canonical."""
    metric, dot, stat_text = text.strip().lower().partition(".")
    stat = _canonical_stat(stat_text.strip()) if dot else None
    metric = metric.strip()
    if metric in LATENCY_METRICS:
        if stat is None:
            return metric, None, f"{metric} needs a statistic, e.g. {metric}.p95"
        problem = _stat_problem(stat)
        return metric, stat, problem
    if metric in RATE_METRICS:
        if stat is not None:
            return metric, stat, f"{metric} takes no statistic, got .{stat_text.strip()}"
        return metric, None, None
    if not metric:
        return metric, stat, "no metric before the comparison"
    return metric, stat, _unknown(metric, LATENCY_METRICS + RATE_METRICS, "metric")


def parse_metric(text: str, option: str = "--metric") -> tuple[str, str | None]:
    """``METRIC[.STAT]`` (``ttft.p95``, ``error_rate``) by the threshold grammar's rules."""
    metric, stat, problem = _metric_problem(text)
    if problem is not None:
        raise UsageError(f"{option} {text!r}: {problem}\n{GRAMMAR}")
    return metric, stat


def _value(metric: str, number: float, unit: str) -> tuple[float, str | None]:
    """The number in the threshold's internal unit, or a problem."""
    if metric in LATENCY_METRICS:
        if unit not in _LATENCY_UNITS:
            return 0.0, f"unknown unit {unit!r} for a latency: use us, ms or s"
        return number * _LATENCY_UNITS[unit], None
    if metric == "error_rate":
        if unit == "%":
            if number > 100:
                return 0.0, f"an error rate is at most 100%, got {number:g}%"
            return number / 100, None
        if unit:
            return 0.0, f"unknown unit {unit!r} for error_rate: use a fraction or N%"
        if number > 1:
            return 0.0, f"a bare error_rate is a fraction 0..1, got {number:g} (write {number:g}%?)"
        return number, None
    if unit not in ("", "/s"):
        return 0.0, f"unknown unit {unit!r} for {metric}: use none or /s"
    return number, None


def parse_threshold(text: str) -> Threshold:
    """``METRIC[.STAT] OP NUMBER[UNIT]``; :class:`UsageError` with the grammar otherwise."""

    def fail(problem: str) -> UsageError:
        return UsageError(f"--threshold {text!r}: {problem}\n{GRAMMAR}")

    found = _OP_RE.search(text)
    if found is None:
        raise fail("no comparison: expected one of <, <=, >, >=")
    op_text = found.group()
    if op_text not in _OPS:
        raise fail(f"{op_text!r} is not a comparison here: use <, <=, > or >=")
    op = Op(op_text)
    metric, stat, problem = _metric_problem(text[: found.start()])
    if problem is not None:
        raise fail(problem)
    right = text[found.end() :].strip()
    m = _RIGHT_RE.fullmatch(right)
    if m is None:
        raise fail(f"expected a number after {op_text}, got {right!r}")
    number = float(m.group(1))
    if not math.isfinite(number):
        raise fail(f"the number {m.group(1)[:20]!r}... is too large")
    unit = m.group(2).lower() if m.group(2) != "µs" else "µs"
    value, problem = _value(metric, number, unit)
    if problem is not None:
        raise fail(problem)
    return Threshold(metric=metric, stat=stat, op=op, value=value, source=text)


def _number_text(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def format_threshold(metric: str, stat: str | None, op: Op, value: float) -> str:
    """The canonical expression for a threshold; :func:`parse_threshold` reads it back."""
    name = metric if stat is None else f"{metric}.{stat}"
    unit = "ms" if metric in LATENCY_METRICS else ""
    return f"{name}{op}{_number_text(value)}{unit}"


# -- the [slo] table -----------------------------------------------------------------------

_SLO_LATENCY_KEYS = {f"{m}_ms": m for m in LATENCY_METRICS}
_SLO_KEYS = (*_SLO_LATENCY_KEYS, "error_rate")
_STAT_EXAMPLES = ("p50", "p90", "p95", "p99", "p99.9", "mean", "min", "max")


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        x = float(value)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def slo_thresholds(table: object, key: str = "slo") -> tuple[tuple[Threshold, ...], list[str]]:
    """The scenario's ``[slo]`` table as ``<=`` thresholds, and every problem found.

    ``ttft_ms = { p95 = 500 }``, ``e2e_ms = { p95 = 8000, p99 = 12000 }`` (any latency
    metric with ``_ms``; TOML needs quotes for ``"p99.9"``), ``error_rate = 0.01``. An absent
    table (None) is no SLO. Each threshold's ``source`` is its canonical expression.
    """
    if table is None:
        return (), []
    if not isinstance(table, Mapping):
        return (), [f"{key}: expected a table, got {show(table)}"]
    thresholds: list[Threshold] = []
    problems: list[str] = []
    for name, limits in table.items():
        where = f"{key}.{name}"
        if name == "error_rate":
            x = _finite(limits)
            if x is None or not 0.0 <= x <= 1.0:
                problems.append(f"{where}: expected a number from 0 to 1, got {show(limits)}")
                continue
            source = format_threshold("error_rate", None, Op.LE, x)
            thresholds.append(Threshold("error_rate", None, Op.LE, x, source))
            continue
        metric = _SLO_LATENCY_KEYS.get(name) if isinstance(name, str) else None
        if metric is None:
            problems.append(f"{key}: {_unknown(str(name), _SLO_KEYS, 'key')}")
            continue
        if not isinstance(limits, Mapping) or not limits:
            problems.append(
                f"{where}: expected a table such as {{ p95 = 500 }}, got {show(limits)}"
            )
            continue
        for stat_key, limit in limits.items():
            stat = _canonical_stat(str(stat_key).strip().lower())
            problem = _stat_problem(stat)
            if problem is not None and problem.startswith("unknown"):
                problem = _unknown(str(stat_key), _STAT_EXAMPLES, "key")
                problem += ": expected pN (0 < N < 100), mean, min or max"
            if problem is not None:
                problems.append(f"{where}: {problem}")
                continue
            x = _finite(limit)
            if x is None or x <= 0:
                problems.append(
                    f"{where}.{stat_key}: expected a positive number, got {show(limit)}"
                )
                continue
            source = format_threshold(metric, stat, Op.LE, x)
            thresholds.append(Threshold(metric, stat, Op.LE, x, source))
    return tuple(thresholds), problems


def slo_request_limits(thresholds: Sequence[Threshold]) -> tuple[tuple[str, float, int], ...]:
    """``(metric, percentile, limit_us)`` for the engine's per-request goodput.

    Only upper bounds (``<``, ``<=``) on a percentile of ttft, itl, tpot or e2e say what
    one request must meet: a request is good when its own value (for ITL: its own gaps at
    that percentile) is within every limit. ``<`` becomes the largest integer µs strictly
    below the limit, ``<=`` the largest one at or below it.
    """
    limits: list[tuple[str, float, int]] = []
    for t in thresholds:
        p = t.percentile
        if t.metric not in PER_REQUEST_METRICS or p is None or t.op not in (Op.LT, Op.LE):
            continue
        us = round(t.value * 1000, 6)  # 0.1 s is 100000.00000000001 µs in floats
        limit = math.floor(us) if t.op is Op.LE else math.ceil(us) - 1
        item = (t.metric, p, limit)
        if item not in limits:
            limits.append(item)
    return tuple(limits)


# -- values of a stage ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    value: float | None
    reason: str | None  # why value is None
    applicable: bool  # False: the stage does not measure this metric at all


def _dig(obj: object, *keys: str) -> object:
    for k in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(k)
    return obj


def _lookup(stage: Mapping[str, Any], metric: str, stat: str | None) -> _Found:
    if metric in LATENCY_METRICS:
        return _latency(stage, metric, stat or "p50")
    if metric == "error_rate":
        sent = _finite(_dig(stage, "requests", "sent"))
        failed = _finite(_dig(stage, "requests", "failed"))
        if sent is None or failed is None:
            return _Found(None, "requests.sent or requests.failed missing from the result", True)
        return _Found(failed / sent if sent > 0 else 0.0, None, True)
    if metric == "goodput_rps":
        goodput = stage.get("goodput")
        if goodput is None:
            return _Found(None, "not measured: the run had no per-request SLO", False)
        value = _finite(_dig(goodput, "requests_per_s"))
        return _Found(value, None if value is not None else "goodput.requests_per_s missing", True)
    value = _finite(_dig(stage, "throughput", metric))
    return _Found(value, None if value is not None else f"throughput.{metric} missing", True)


def _latency(stage: Mapping[str, Any], metric: str, stat: str) -> _Found:
    stored = _dig(stage, "latency_ms", metric)
    blob = _dig(stage, "histograms", metric)
    if not isinstance(stored, Mapping) and not isinstance(blob, str):
        mode = stage.get("mode")
        if metric in OPEN_LOOP_ONLY and mode == "concurrency":
            return _Found(None, "not measured in closed loop", False)
        return _Found(None, f"{metric} not in this result", False)
    count = _finite(_dig(stored, "count"))
    if count == 0:
        return _Found(None, "no values: no successful request measured it", True)
    if stat in STORED_STATS and isinstance(stored, Mapping):
        value = _finite(stored.get(stat))
        if value is not None:
            return _Found(value, None, True)
    if not isinstance(blob, str):
        return _Found(None, f"{stat} needs the {metric} histogram, which the result lacks", True)
    try:
        h = decode(blob)
    except ValueError as exc:
        raise UsageError(f"{_label(stage)}: histograms.{metric}: {exc}") from None
    if not h.total_count:
        return _Found(None, "no values: no successful request measured it", True)
    p = _percentile(stat)
    if p is not None:
        return _Found(percentile_ms(h, p), None, True)
    return _Found(float(getattr(summarize(h), stat)), None, True)


def stage_value(stage: Mapping[str, Any], metric: str, stat: str | None = None) -> float | None:
    """The stage's value of ``METRIC[.STAT]`` in threshold units; None when it has none."""
    return _lookup(stage, metric, stat).value


def _label(stage: Mapping[str, Any]) -> str:
    return f"{stage.get('model', '?')} {stage.get('label', '?')}"


def evaluate(
    thresholds: Sequence[Threshold], stages: Sequence[Mapping[str, Any]]
) -> list[tuple[str, list[ThresholdResult]]]:
    """Every threshold against every stage, labelled ``"model c=4"``, in stage order."""
    return [(_label(s), [t.check(s) for t in thresholds]) for s in stages]
