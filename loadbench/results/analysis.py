"""The scaling summary of a run: per model, how throughput and latency grow with load.

Pure: a result document in, the ``"summary"`` dict of a result file out (JSON-safe, the
format the report renderer reads). Per load point it gives the headline numbers, a
Little's-law check of how many requests were really in flight, whether the load generator
rather than the server set the pace, and the SLO verdict; per model, where throughput
saturates, the knee (where requests start to queue), the highest load within the SLO, the
peak throughput and the lowest TTFT.

``load`` is the total load the server was offered: the stage's concurrency (closed loop)
or rate (open loop) times the number of load generators merged into the stage (1 unless
the file came from ``loadbench merge``), so it matches the stage's summed throughput.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import pairwise
from typing import Any

from loadbench.results.search import search_summary, search_thresholds
from loadbench.thresholds import Threshold, ThresholdResult, evaluate

__all__ = [
    "HARNESS_BUSY_FRACTION",
    "KNEE_EFFICIENCY",
    "KNEE_LATENCY_RISE",
    "KNEE_QUEUE_FACTOR",
    "KNEE_RULE",
    "summarize_run",
]

KNEE_EFFICIENCY = 0.25  # a step whose throughput gain is < 25% of its load gain adds too little
KNEE_LATENCY_RISE = 0.10  # saturation: ... while latency (TTFT p95, else E2E p95) rises > 10%
KNEE_QUEUE_FACTOR = 1.5  # knee: ... while latency rises > 1.5x as fast as the load
HARNESS_BUSY_FRACTION = 0.9  # closed loop: workers idle > 10% of the time set the pace
HARNESS_SEND_RATE = 0.9  # open loop: requests went out at < 90% of the offered rate
LITTLE_MIN_FRACTION = 0.5  # closed loop: fewer than half the target in flight

KNEE_RULE = (
    f"Throughput saturates at the last load before the first step up where throughput "
    f"grows by less than {KNEE_EFFICIENCY:.0%} of the load increase while TTFT p95 (E2E p95 "
    f"without streamed tokens) rises by more than {KNEE_LATENCY_RISE:.0%}. The knee is the "
    f"last load before the first such step where that latency rises more than "
    f"{KNEE_QUEUE_FACTOR:g}x as fast as the load (e.g. by more than "
    f"{KNEE_QUEUE_FACTOR:.0%} for a doubling): a server that shares itself among more "
    f"requests slows each in proportion to the load, so a faster rise means requests have "
    f"started to wait in a queue."
)


def _num(obj: object, *keys: str) -> float | None:
    for k in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(k)
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        return None
    return float(obj)


def _load(stage: Mapping[str, Any]) -> float:
    key = "rate" if stage.get("mode") == "rate" else "concurrency"
    per_generator = _num(stage, key) or 0.0
    return per_generator * (_num(stage, "generators") or 1.0)


def _label(stage: Mapping[str, Any]) -> str:
    label = str(stage.get("label", "?"))
    generators = int(_num(stage, "generators") or 1)
    return f"{label} ×{generators}" if generators > 1 else label


def _percentiles(stage: Mapping[str, Any], metric: str) -> dict[str, float]:
    return {p: _num(stage, "latency_ms", metric, p) or 0.0 for p in ("p50", "p95", "p99")}


def _error_rate(stage: Mapping[str, Any]) -> float:
    sent = _num(stage, "requests", "sent") or 0.0
    return (_num(stage, "requests", "failed") or 0.0) / sent if sent > 0 else 0.0


def _littles_law(stage: Mapping[str, Any], load: float) -> dict[str, Any]:
    """Little's law, L = λW: ok requests/s × their mean E2E is the mean number in flight.

    Closed loop, that should be close to the concurrency. It is flagged as bound by the
    harness when workers were idle between requests (``pacing.busy_fraction`` below
    ``HARNESS_BUSY_FRACTION``), or when fewer than half the target were in flight. That
    second test needs at least two requests per worker (with fewer, the ramp-down tail
    alone halves the average) and prefers the measured ``achieved_concurrency``, which
    counts failed requests too: fast failures hold a slot briefly but are not the harness.

    Open loop, it is flagged when requests went out at less than ``HARNESS_SEND_RATE`` of
    the offered rate. The send rate is sent / (window - mean E2E from the send), since
    the measured window ends with the last request's response, not its send; and it is
    only trusted when ``schedule_lag`` p95 is at least one mean gap between arrivals
    (the sends really were late), because a random (Poisson) schedule alone can run
    short of its mean rate.
    """
    closed = stage.get("mode") != "rate"
    rps = _num(stage, "throughput", "requests_per_s") or 0.0
    mean_e2e_s = (_num(stage, "latency_ms", "e2e", "mean") or 0.0) / 1000
    expected = rps * mean_e2e_s
    busy = _num(stage, "pacing", "busy_fraction")
    achieved = _num(stage, "achieved_concurrency")
    sent = _num(stage, "requests", "sent") or 0.0
    note: str | None = None
    if closed:
        in_flight = achieved if achieved is not None else expected
        if busy is not None and busy < HARNESS_BUSY_FRACTION:
            note = (
                f"workers had a request out only {busy:.0%} of the time: the load generator, "
                f"not the server, set the pace (about {in_flight:.1f} of {load:g} in flight)"
            )
        elif load > 0 and sent >= 2 * load and in_flight < LITTLE_MIN_FRACTION * load:
            note = (
                f"only {in_flight:.1f} of {load:g} requests were in flight on average "
                f"(Little's law): the load generator, not the server, set the pace"
            )
    else:
        note = _open_loop_note(stage, load, sent)
    return {
        "throughput_rps": rps,
        "mean_e2e_s": round(mean_e2e_s, 6),
        "in_flight_expected": round(expected, 3),
        "in_flight_target": load if closed else None,
        "busy_fraction": busy,
        "harness_bound": note is not None,
        "note": note,
    }


def _open_loop_note(stage: Mapping[str, Any], rate: float, sent: float) -> str | None:
    duration_s = _num(stage, "duration_s") or 0.0
    e2e_ms = _num(stage, "latency_ms", "e2e_raw", "mean")
    if e2e_ms is None:
        e2e_ms = _num(stage, "latency_ms", "e2e", "mean") or 0.0
    send_window_s = duration_s - e2e_ms / 1000
    if rate <= 0 or sent < 2 or send_window_s <= 0:
        return None
    send_rate = sent / send_window_s
    lag_p95_ms = _num(stage, "latency_ms", "schedule_lag", "p95")
    late = lag_p95_ms is None or lag_p95_ms >= 1000 / rate
    if send_rate >= HARNESS_SEND_RATE * rate or not late:
        return None
    lag = f", schedule lag p95 {lag_p95_ms:g} ms" if lag_p95_ms is not None else ""
    return (
        f"requests went out at {send_rate:.3g}/s of the {rate:g}/s offered{lag}: "
        f"the load generator fell behind the schedule"
    )


def _point(stage: Mapping[str, Any], results: list[ThresholdResult] | None) -> dict[str, Any]:
    load = _load(stage)
    goodput = stage.get("goodput")
    return {
        "label": _label(stage),
        "load": load,
        "achieved_concurrency": _num(stage, "achieved_concurrency"),
        "requests_per_s": _num(stage, "throughput", "requests_per_s") or 0.0,
        "output_tokens_per_s": _num(stage, "throughput", "output_tokens_per_s") or 0.0,
        "goodput_rps": _num(goodput, "requests_per_s") if goodput is not None else None,
        "error_rate": round(_error_rate(stage), 6),
        "ttft_ms": _percentiles(stage, "ttft"),
        "itl_ms": _percentiles(stage, "itl"),
        "e2e_ms": _percentiles(stage, "e2e"),
        "littles_law": _littles_law(stage, load),
        "meets_slo": None if results is None else all(r.passed for r in results),
        "slo_failures": [r.describe() for r in results or () if not r.passed],
    }


def _pct(x: float) -> str:
    return f"{x:+.1%}" if abs(x) < 0.1 else f"{x:+.0%}"


def _saturated_steps(points: Sequence[Mapping[str, Any]]) -> Iterator[tuple[dict[str, Any], float]]:
    """Each step up in load, in order, where throughput stopped keeping up (see
    :data:`KNEE_RULE`): the step's facts and how many times faster than the load its
    latency rose.

    Throughput is output tokens/s, or requests/s for a step where either side has no
    tokens. Steps where a ratio is undefined (a zero throughput, latency or load gain)
    are skipped rather than guessed.
    """
    for a, b in pairwise(points):
        thr_key = "output_tokens_per_s"
        if not (a[thr_key] > 0 and b[thr_key] > 0):
            thr_key = "requests_per_s"
        lat_key, lat_name = "ttft_ms", "TTFT"
        if not (a["ttft_ms"]["p95"] > 0 and b["ttft_ms"]["p95"] > 0):
            lat_key, lat_name = "e2e_ms", "E2E"
        thr_a, lat_a = a[thr_key], a[lat_key]["p95"]
        if thr_a <= 0 or lat_a <= 0 or a["load"] <= 0 or b["load"] <= a["load"]:
            continue
        load_gain = b["load"] / a["load"] - 1
        thr_gain = b[thr_key] / thr_a - 1
        lat_rise = b[lat_key]["p95"] / lat_a - 1
        if thr_gain / load_gain < KNEE_EFFICIENCY and lat_rise > KNEE_LATENCY_RISE:
            reason = (
                f"{a['label']} → {b['label']}: throughput {_pct(thr_gain)} for "
                f"{_pct(load_gain)} load, {lat_name} p95 {_pct(lat_rise)}"
            )
            if b["littles_law"]["harness_bound"]:
                reason += f" ({b['label']} was bound by the load generator)"
            yield {"label": a["label"], "load": a["load"], "reason": reason}, lat_rise / load_gain


def find_saturation(points: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Where throughput stops growing with load, of points sorted by load, or None."""
    return next((step for step, _ in _saturated_steps(points)), None)


def find_knee(points: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Where requests start to queue, of points sorted by load (see :data:`KNEE_RULE`).

    Past saturation a closed loop shares the server among more requests, and each slows
    in proportion (Little's law); only a latency rise well beyond that proportion says
    requests wait for admission (a slot, a batch) — the knee users feel. On a server with
    spare parallel capacity the two coincide; with one busy CPU thread and four slots,
    throughput is flat from one stream while the queue starts past four.
    """
    for step, elasticity in _saturated_steps(points):
        if elasticity > KNEE_QUEUE_FACTOR:
            return {**step, "reason": f"{step['reason']}, {elasticity:.1f}× the load increase"}
    return None


def _model_summary(
    model: str, mode: str, stages: list[tuple[Mapping[str, Any], list[ThresholdResult] | None]]
) -> dict[str, Any]:
    points = sorted((_point(s, r) for s, r in stages), key=lambda p: p["load"])
    within = [p for p in points if p["meets_slo"]]
    measured = [p for p in points if p["ttft_ms"]["p50"] > 0]
    peak = max(points, key=lambda p: p["output_tokens_per_s"], default=None)
    fastest = min(measured, key=lambda p: p["ttft_ms"]["p50"], default=None)
    return {
        "model": model,
        "mode": mode,
        "points": points,
        "saturation": find_saturation(points),
        "knee": find_knee(points),
        "max_load_within_slo": (
            {"label": within[-1]["label"], "load": within[-1]["load"]} if within else None
        ),
        "peak_throughput": (
            {
                "label": peak["label"],
                "load": peak["load"],
                "output_tokens_per_s": peak["output_tokens_per_s"],
            }
            if peak is not None
            else None
        ),
        "lowest_ttft": (
            {
                "label": fastest["label"],
                "load": fastest["load"],
                "ttft_p50_ms": fastest["ttft_ms"]["p50"],
            }
            if fastest is not None
            else None
        ),
    }


def summarize_run(doc: Mapping[str, Any], thresholds: Sequence[Threshold] = ()) -> dict[str, Any]:
    """The ``"summary"`` of a result document: one entry per (model, mode), in file order.

    ``meets_slo`` is None on every point when there are no thresholds; then
    ``max_load_within_slo`` is None too. A knee or saturation of None means the curve
    showed none. A run of a ``[load] search`` adds ``search`` (one block per model, see
    :mod:`loadbench.results.search`), and its ``[slo]`` judges every point even when the
    run's own checks left it out (a search's stages above the answer fail it by design).
    """
    stages = [s for s in doc.get("stages", ()) if isinstance(s, Mapping)]
    search = search_summary(doc)
    if search is not None:  # a search's [slo] judges its stages, wherever checks came from
        known = {t.source for t in thresholds}
        thresholds = [*thresholds, *(t for t in search_thresholds(doc) if t.source not in known)]
    verdicts = evaluate(thresholds, stages) if thresholds else None
    groups: dict[tuple[str, str], list[tuple[Mapping[str, Any], list[ThresholdResult] | None]]]
    groups = {}
    for i, stage in enumerate(stages):
        key = (str(stage.get("model", "")), str(stage.get("mode", "concurrency")))
        groups.setdefault(key, []).append((stage, verdicts[i][1] if verdicts else None))
    return {
        "knee_rule": KNEE_RULE,
        "slo": [t.source for t in thresholds],
        "models": [_model_summary(model, mode, g) for (model, mode), g in groups.items()],
        **({} if search is None else {"search": search}),
    }
