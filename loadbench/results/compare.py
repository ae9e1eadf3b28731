"""Noise-aware comparison of two result files: did the candidate regress from the baseline?

Pure: two result documents in, a :class:`Comparison` out. Stages are matched by
(model, mode, concurrency, rate) and never guessed: a stage on one side only is listed as
unmatched. Per matched stage and metric the verdict is one of :class:`Verdict`.

Two runs of the same build never give the same p95, so a change counts as a regression
only when it is both larger than the tolerance (``max_regression``, 10% by default) *and*
larger than the noise the two runs themselves show. For latency percentiles that noise is
a ~95% confidence interval per run, computed from its HDR histogram
(:func:`percentile_interval_ms`); the runs must also hold at least ``min_samples`` values,
or the verdict is "too few samples" and never a regression.

Inter-token gaps are not independent samples: the gaps of one request share its batch,
its connection and whatever stalled the machine while it streamed. Treating a stage's
thousands of ITL gaps as independent gave intervals so narrow that twin runs of one
build, compared at 10%, failed on ``itl.p95`` (measured on a busy 2-core machine, see
tests/test_compare.py). ITL intervals are therefore widened to the stage's number of
requests, as if every gap of a request were the same value (the design effect of cluster
sampling at its upper bound, n gaps / requests): the interval a per-request sample of that
size would give.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hdrh.histogram import HdrHistogram

from loadbench.errors import UsageError
from loadbench.metrics import decode
from loadbench.thresholds import LATENCY_METRICS, parse_metric, stage_value

__all__ = [
    "DEFAULT_METRICS",
    "ERROR_RATE_FLOOR",
    "Comparison",
    "MetricDelta",
    "Verdict",
    "compare",
    "parse_tolerance",
    "percentile_interval_ms",
    "stage_key",
    "stage_label",
]

DEFAULT_METRICS = ("ttft.p95", "itl.p95", "e2e.p95", "output_tokens_per_s", "error_rate")
ERROR_RATE_FLOOR = 0.01  # an error rate change below 1 percentage point is never a regression
Z_95 = 1.96


class Verdict(StrEnum):
    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    NOISE = "within noise"  # beyond the tolerance, but not beyond the runs' own noise
    OK = "ok"  # within the tolerance
    FEW = "too few samples"
    MISSING = "missing"  # one side has no value for the metric


@dataclass(frozen=True)
class MetricDelta:
    """``ratio`` is candidate / baseline (None when the baseline is 0 or a side is
    missing); ``worse`` is the direction alone, ``regression`` the verdict's."""

    stage: str
    metric: str
    baseline: float | None
    candidate: float | None
    ratio: float | None
    worse: bool
    regression: bool
    verdict: Verdict


@dataclass(frozen=True)
class Comparison:
    deltas: tuple[MetricDelta, ...]
    unmatched_baseline: tuple[str, ...]  # stage labels ("model c=4") only the baseline has
    unmatched_candidate: tuple[str, ...]
    regressions: int


_NUMBER_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_tolerance(text: str) -> float:
    """``"10%"`` or ``"0.1"`` → 0.1. A bare number above 1 is refused (``10`` is 10%?)."""
    raw = text.strip()
    percent = raw.endswith("%")
    number = raw[:-1].strip() if percent else raw
    value = float(number) if _NUMBER_RE.fullmatch(number) else math.nan
    if percent:
        value /= 100
    want = "expected a percentage such as 10% or a fraction such as 0.1"
    if not math.isfinite(value):
        raise UsageError(f"tolerance {text!r}: {want}")
    if not percent and value > 1:
        raise UsageError(f"tolerance {text!r}: {want} (did you mean {number}%?)")
    return value


# -- the noise in one run's percentile -----------------------------------------------------


def _indexes_at_ranks(h: HdrHistogram, ranks: Sequence[int]) -> list[int]:
    """The counts index holding each 1-based rank (ranks ascending, within 1..total)."""
    found: list[int] = []
    cumulative = 0
    pending = iter(ranks)
    rank = next(pending, None)
    for index, count in enumerate(h.counts):
        if not count:
            continue
        cumulative += count
        while rank is not None and cumulative >= rank:
            found.append(index)
            rank = next(pending, None)
        if rank is None:
            break
    return found


def percentile_interval_ms(
    h: HdrHistogram, p: float, z: float = Z_95, clusters: int | None = None
) -> tuple[float, float]:
    """A ~95% (for z = 1.96) confidence interval of percentile ``p`` (0-100), in ms.

    Distribution-free (binomial order statistics): the number of values below the true
    q-quantile is Binomial(n, q), so the ranks n·q ± z·sqrt(n·q·(1−q)) bracket it (lower
    rank rounded down, upper rounded up plus one, the textbook form). Ranks are mapped
    to values through the histogram's cumulative counts: the bottom of the bucket for the
    low end and the top for the high end, so bucket rounding widens, never narrows, the
    interval, and it always contains :func:`loadbench.metrics.percentile_ms`'s value.
    (0.0, 0.0) for an empty histogram.

    ``clusters``: the values come in that many correlated groups (ITL gaps, grouped by
    request); the rank spread is scaled by sqrt(n / clusters), so the interval is as wide
    as that many independent values would give. None or >= n: values are independent.
    """
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    n: int = h.total_count
    if not n:
        return 0.0, 0.0
    q = p / 100
    centre = n * q
    design_effect = n / clusters if clusters is not None and 0 < clusters < n else 1.0
    half = z * math.sqrt(n * q * (1 - q) * design_effect)
    point = max(1, min(n, int(centre + 0.5)))  # hdrh's rank for the percentile itself
    low_rank = max(1, min(point, math.floor(centre - half)))
    high_rank = min(n, max(point, math.ceil(centre + half) + 1))
    low_index, high_index = _indexes_at_ranks(h, [low_rank, high_rank])
    low: int = h.get_lowest_equivalent_value(h.get_value_from_index(low_index))
    high: int = h.get_highest_equivalent_value(h.get_value_from_index(high_index))
    return low / 1000, high / 1000


# -- one metric of one stage ---------------------------------------------------------------

_HIGHER_IS_WORSE = (*LATENCY_METRICS, "error_rate")


def _histogram(stage: Mapping[str, Any], metric: str) -> HdrHistogram | None:
    histograms = stage.get("histograms")
    blob = histograms.get(metric) if isinstance(histograms, Mapping) else None
    if not isinstance(blob, str):
        return None
    try:
        return decode(blob)
    except ValueError as exc:
        label = f"{stage.get('model', '?')} {stage.get('label', '?')}"
        raise UsageError(f"{label}: histograms.{metric}: {exc}") from None


def _count(stage: Mapping[str, Any], key: str, metric: str) -> int:
    table = stage.get(key)
    value = table.get(metric) if isinstance(table, Mapping) else None
    if key == "latency_ms":
        value = value.get("count") if isinstance(value, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _clusters(stage: Mapping[str, Any], metric: str) -> int | None:
    """For ITL, the number of requests its gaps came from (one e2e value each); else None."""
    if metric != "itl":
        return None
    h = _histogram(stage, "e2e")
    requests = h.total_count if h is not None else _count(stage, "latency_ms", "e2e")
    return requests or None


@dataclass(frozen=True)
class _Rule:
    tolerance: float
    min_samples: int


def _latency_verdict(
    base: Mapping[str, Any],
    cand: Mapping[str, Any],
    metric: str,
    stat: str,
    b: float,
    c: float,
    rule: _Rule,
) -> Verdict:
    """Beyond the tolerance, and (for a percentile) the two runs' intervals apart.

    ``mean``, ``min`` and ``max`` have no interval here: they are judged on the tolerance
    alone (``max`` is one request, so expect it to be noisy). A percentile without both
    histograms falls back to the tolerance too.
    """
    hb, hc = _histogram(base, metric), _histogram(cand, metric)
    nb = hb.total_count if hb is not None else _count(base, "latency_ms", metric)
    nc = hc.total_count if hc is not None else _count(cand, "latency_ms", metric)
    if min(nb, nc) < rule.min_samples:
        return Verdict.FEW
    beyond_worse = c > b * (1 + rule.tolerance)
    beyond_better = c < b * (1 - rule.tolerance)
    if not (beyond_worse or beyond_better):
        return Verdict.OK
    p = float(stat[1:]) if stat.startswith("p") else None
    if p is not None and hb is not None and hc is not None:
        b_low, b_high = percentile_interval_ms(hb, p, clusters=_clusters(base, metric))
        c_low, c_high = percentile_interval_ms(hc, p, clusters=_clusters(cand, metric))
        apart = c_low > b_high if beyond_worse else c_high < b_low
        if not apart:
            return Verdict.NOISE
    return Verdict.REGRESSION if beyond_worse else Verdict.IMPROVEMENT


def _error_rate_verdict(
    base: Mapping[str, Any], cand: Mapping[str, Any], b: float, c: float, rule: _Rule
) -> Verdict:
    """Beyond max(tolerance × baseline, 1 point), and beyond chance (two-proportion z test).

    A relative tolerance alone means nothing near zero (0.1% → 0.2% is "double" and one
    request), hence the absolute floor of :data:`ERROR_RATE_FLOOR`. The z test (pooled,
    |z| > 1.96) asks whether that many more failures out of that many requests could be
    luck; it replaces ``min_samples`` here, since ten failures out of ten is evidence.
    """
    margin = max(rule.tolerance * b, ERROR_RATE_FLOOR)
    if abs(c - b) <= margin:
        return Verdict.OK
    nb = _num_sent(base)
    nc = _num_sent(cand)
    if not (nb and nc):
        return Verdict.FEW
    pooled = (b * nb + c * nc) / (nb + nc)
    se = math.sqrt(pooled * (1 - pooled) * (1 / nb + 1 / nc))
    if se == 0 or abs(c - b) / se <= Z_95:
        return Verdict.NOISE
    return Verdict.REGRESSION if c > b else Verdict.IMPROVEMENT


def _num_sent(stage: Mapping[str, Any]) -> int:
    requests = stage.get("requests")
    sent = requests.get("sent") if isinstance(requests, Mapping) else None
    return sent if isinstance(sent, int) and not isinstance(sent, bool) else 0


def _throughput_verdict(b: float, c: float, rule: _Rule) -> Verdict:
    """Throughput has no histogram, hence no interval: the tolerance alone decides."""
    if c < b * (1 - rule.tolerance):
        return Verdict.REGRESSION
    if c > b * (1 + rule.tolerance):
        return Verdict.IMPROVEMENT
    return Verdict.OK


def _delta(
    label: str,
    base: Mapping[str, Any],
    cand: Mapping[str, Any],
    name: str,
    metric: str,
    stat: str | None,
    rule: _Rule,
) -> MetricDelta:
    b, c = stage_value(base, metric, stat), stage_value(cand, metric, stat)
    if b is None or c is None:
        return MetricDelta(label, name, b, c, None, False, False, Verdict.MISSING)
    worse = c > b if metric in _HIGHER_IS_WORSE else c < b
    if metric in LATENCY_METRICS:
        verdict = _latency_verdict(base, cand, metric, stat or "p50", b, c, rule)
    elif metric == "error_rate":
        verdict = _error_rate_verdict(base, cand, b, c, rule)
    else:
        verdict = _throughput_verdict(b, c, rule)
    ratio = c / b if b else None
    regression = verdict is Verdict.REGRESSION
    return MetricDelta(label, name, b, c, ratio, worse, regression, verdict)


# -- two documents -------------------------------------------------------------------------

StageKey = tuple[str, str, int | None, float | None]


def stage_key(stage: Mapping[str, Any]) -> StageKey:
    """(model, mode, concurrency, rate): what makes two stages the same experiment."""
    concurrency, rate = stage.get("concurrency"), stage.get("rate")
    return (
        str(stage.get("model")),
        str(stage.get("mode")),
        concurrency if isinstance(concurrency, int) else None,
        float(rate) if isinstance(rate, int | float) else None,
    )


def stage_label(stage: Mapping[str, Any]) -> str:
    return f"{stage.get('model', '?')} {stage.get('label', '?')}"


def _index(doc: Mapping[str, Any]) -> tuple[dict[StageKey, Mapping[str, Any]], list[str]]:
    """Stages by key; a key seen twice in one file is ambiguous, so all its stages are
    returned as unmatched instead."""
    stages = [s for s in doc.get("stages", ()) if isinstance(s, Mapping)]
    seen: dict[StageKey, list[Mapping[str, Any]]] = {}
    for s in stages:
        seen.setdefault(stage_key(s), []).append(s)
    unique = {k: v[0] for k, v in seen.items() if len(v) == 1}
    duplicated = [stage_label(s) for v in seen.values() if len(v) > 1 for s in v]
    return unique, duplicated


def compare(
    baseline: Mapping[str, Any],
    candidate: Mapping[str, Any],
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    max_regression: float = 0.10,
    min_samples: int = 30,
) -> Comparison:
    """Every metric of every matched stage, in the baseline's stage order.

    ``metrics`` use the threshold grammar's ``METRIC[.STAT]``; an unknown one is a
    :class:`UsageError`. ``max_regression`` is a fraction (0.1 = 10%).
    """
    parsed = []
    for text in metrics:
        metric, stat = parse_metric(text)
        parsed.append((metric if stat is None else f"{metric}.{stat}", metric, stat))
    if not (math.isfinite(max_regression) and max_regression >= 0):
        raise UsageError(f"tolerance {max_regression!r}: expected a fraction >= 0")
    rule = _Rule(max_regression, min_samples)
    base, base_dupes = _index(baseline)
    cand, cand_dupes = _index(candidate)
    deltas = [
        _delta(stage_label(b), b, cand[key], name, metric, stat, rule)
        for key, b in base.items()
        if key in cand
        for name, metric, stat in parsed
    ]
    return Comparison(
        deltas=tuple(deltas),
        unmatched_baseline=(
            *(stage_label(s) for k, s in base.items() if k not in cand),
            *base_dupes,
        ),
        unmatched_candidate=(
            *(stage_label(s) for k, s in cand.items() if k not in base),
            *cand_dupes,
        ),
        regressions=sum(d.regression for d in deltas),
    )
