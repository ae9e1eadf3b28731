"""The scaling summary: shape, knee, Little's law and harness checks, SLO verdicts.

Stage dicts are built here from lists of latency values, the way ``results.stage_to_dict``
writes them; ``make_stage`` and ``make_doc`` are shared with the compare and merge tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadbench.metrics import encode, new_histogram, record, summarize
from loadbench.results.analysis import (
    KNEE_EFFICIENCY,
    KNEE_LATENCY_RISE,
    KNEE_QUEUE_FACTOR,
    KNEE_RULE,
    summarize_run,
)
from loadbench.thresholds import parse_threshold

LOADS = (1, 2, 4, 8, 16, 32, 64)


def _us(values_ms: Sequence[float]) -> list[int]:
    return [round(v * 1000) for v in values_ms]


def make_stage(
    model: str = "m",
    *,
    concurrency: int | None = 4,
    rate: float | None = None,
    ttft_ms: Sequence[float] = (50.0,) * 20,
    itl_ms: Sequence[float] | None = None,
    e2e_ms: Sequence[float] | None = None,
    tpot_ms: Sequence[float] | None = None,
    schedule_lag_ms: Sequence[float] | None = None,
    sent: int | None = None,
    failed: int = 0,
    duration_s: float = 10.0,
    requests_per_s: float | None = None,
    output_tokens_per_s: float | None = None,
    output_tokens: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A stage dict as a result file holds it; latencies are given in ms."""
    ok = len(ttft_ms)
    series: dict[str, Sequence[float]] = {
        "ttft": ttft_ms,
        "itl": itl_ms if itl_ms is not None else [10.0] * ok,
        "tpot": tpot_ms if tpot_ms is not None else [10.0] * ok,
        "e2e": e2e_ms if e2e_ms is not None else [t + 300.0 for t in ttft_ms],
    }
    if rate is not None:
        series["ttft_raw"] = ttft_ms
        series["e2e_raw"] = series["e2e"]
        series["schedule_lag"] = schedule_lag_ms if schedule_lag_ms is not None else [0.1] * ok
    histograms = {}
    for name, values in series.items():
        h = new_histogram()
        for v in _us(values):
            record(h, v)
        histograms[name] = h
    rps = ok / duration_s if requests_per_s is None else requests_per_s
    tokens = ok * 32 if output_tokens is None else output_tokens
    tok_s = tokens / duration_s if output_tokens_per_s is None else output_tokens_per_s
    sent = ok + failed if sent is None else sent
    return {
        "model": model,
        "label": f"rate={rate:g}/s" if rate is not None else f"c={concurrency}",
        "mode": "rate" if rate is not None else "concurrency",
        "concurrency": None if rate is not None else concurrency,
        "rate": rate,
        "max_concurrency": None,
        "started_at": "2026-01-01T00:00:00.000Z",
        "finished_at": "2026-01-01T00:00:10.000Z",
        "interrupted": False,
        "requests": {"sent": sent, "ok": ok, "failed": failed, "warmup": 2},
        "errors": {"http_500": failed} if failed else {},
        "error_samples": {"http_500": "boom"} if failed else {},
        "duration_s": duration_s,
        "throughput": {"requests_per_s": rps, "output_tokens_per_s": tok_s},
        "tokens": {"output": tokens, "counted_by": "usage"},
        "latency_ms": {name: summarize(h).to_dict() for name, h in histograms.items()},
        "histograms": {name: encode(h) for name, h in histograms.items()},
        "histogram_clamped": 0,
        "client": {
            "cpu_percent": 10.0,
            "loop_lag_ms_p50": 0.1,
            "loop_lag_ms_p99": 0.5,
            "loop_lag_ms_max": 1.0,
            "rss_mb": 40.0,
            "bottleneck": False,
            "warning": None,
        },
        "server": None,
        **extra,
    }


def make_doc(stages: Sequence[dict[str, Any]], name: str = "demo", **extra: Any) -> dict[str, Any]:
    """A result document around ``stages``, valid against the schema."""
    return {
        "schema_version": 1,
        "loadbench_version": "0.1.0",
        "scenario": {"name": name},
        "target": {"base_url": "http://127.0.0.1:1/v1"},
        "environment": {"host": "h", "python": "3.11", "platform": "linux", "cpu_count": 2},
        "started_at": "2026-01-01T00:00:00.000Z",
        "finished_at": "2026-01-01T00:01:00.000Z",
        "interrupted": False,
        "warnings": [],
        "stages": list(stages),
        **extra,
    }


_BASE = make_stage(ttft_ms=[50.0] * 40)


def _flat(value_ms: float) -> dict[str, float | int]:
    stats = ("min", "mean", "p50", "p90", "p95", "p99", "max")
    return {"count": 40, **dict.fromkeys(stats, value_ms)}


def curve(
    loads: Sequence[float], throughput: Sequence[float], ttft_p_ms: Sequence[float]
) -> dict[str, Any]:
    """A closed-loop sweep with the given output tokens/s and (constant) TTFT per load.

    Only the summary figures are set (histograms are not read by the summary), so
    hypothesis can try many curves quickly.
    """
    stages = []
    for load, thr, lat in zip(loads, throughput, ttft_p_ms, strict=True):
        stage = {
            **_BASE,
            "label": f"c={int(load)}",
            "concurrency": int(load),
            "throughput": {"requests_per_s": thr / 32, "output_tokens_per_s": thr},
            "latency_ms": {**_BASE["latency_ms"], "ttft": _flat(lat), "e2e": _flat(lat + 300)},
            "achieved_concurrency": float(load),
            "pacing": {"busy_fraction": 0.99},
        }
        stages.append(stage)
    return make_doc(stages)


# -- shape -------------------------------------------------------------------------------

_POINT_KEYS = {
    "label",
    "load",
    "achieved_concurrency",
    "requests_per_s",
    "output_tokens_per_s",
    "goodput_rps",
    "error_rate",
    "ttft_ms",
    "itl_ms",
    "e2e_ms",
    "littles_law",
    "meets_slo",
    "slo_failures",
}
_LITTLE_KEYS = {
    "throughput_rps",
    "mean_e2e_s",
    "in_flight_expected",
    "in_flight_target",
    "busy_fraction",
    "harness_bound",
    "note",
}
_MODEL_KEYS = {
    "model",
    "mode",
    "points",
    "saturation",
    "knee",
    "max_load_within_slo",
    "peak_throughput",
    "lowest_ttft",
}


def test_summary_has_exactly_the_documented_shape() -> None:
    doc = curve([1, 2, 4], [100, 200, 400], [50, 50, 50])
    summary = summarize_run(doc, [parse_threshold("ttft.p95<500ms")])
    assert set(summary) == {"knee_rule", "slo", "models"}
    assert summary["knee_rule"] == KNEE_RULE
    assert summary["slo"] == ["ttft.p95<500ms"]
    (model,) = summary["models"]
    assert set(model) == _MODEL_KEYS
    assert (model["model"], model["mode"]) == ("m", "concurrency")
    for point in model["points"]:
        assert set(point) == _POINT_KEYS
        assert set(point["littles_law"]) == _LITTLE_KEYS
        for key in ("ttft_ms", "itl_ms", "e2e_ms"):
            assert set(point[key]) == {"p50", "p95", "p99"}
    assert orjson.loads(orjson.dumps(summary)) == summary  # JSON-safe


def test_points_are_sorted_by_load_and_grouped_by_model() -> None:
    stages = [
        make_stage("b", concurrency=8),
        make_stage("a", concurrency=4),
        make_stage("b", concurrency=2),
        make_stage("a", concurrency=1),
    ]
    summary = summarize_run(make_doc(stages))
    assert [m["model"] for m in summary["models"]] == ["b", "a"]
    assert [p["load"] for p in summary["models"][0]["points"]] == [2.0, 8.0]
    assert [p["label"] for p in summary["models"][1]["points"]] == ["c=1", "c=4"]


def test_point_values_come_from_the_stage() -> None:
    stage = make_stage(
        ttft_ms=[10.0] * 18 + [100.0, 200.0],
        failed=5,
        requests_per_s=2.0,
        output_tokens_per_s=64.0,
        achieved_concurrency=3.5,
        goodput={"good": 15, "requests_per_s": 1.5},
    )
    (point,) = summarize_run(make_doc([stage]))["models"][0]["points"]
    assert point["error_rate"] == 5 / 25
    assert point["achieved_concurrency"] == 3.5
    assert point["goodput_rps"] == 1.5
    assert point["ttft_ms"]["p50"] == stage["latency_ms"]["ttft"]["p50"]
    assert point["ttft_ms"]["p99"] == stage["latency_ms"]["ttft"]["p99"]
    little = point["littles_law"]
    assert little["throughput_rps"] == 2.0
    assert little["mean_e2e_s"] == pytest.approx(stage["latency_ms"]["e2e"]["mean"] / 1000)
    assert little["in_flight_expected"] == pytest.approx(2.0 * little["mean_e2e_s"], abs=1e-3)
    assert little["in_flight_target"] == 4.0


def test_no_thresholds_means_no_verdict() -> None:
    model = summarize_run(curve([1, 2], [10, 20], [5, 5]))["models"][0]
    assert all(p["meets_slo"] is None and p["slo_failures"] == [] for p in model["points"])
    assert model["max_load_within_slo"] is None


def test_slo_verdicts_and_max_load_within_slo() -> None:
    doc = curve([1, 2, 4, 8], [10, 20, 40, 41], [100, 200, 600, 900])
    model = summarize_run(doc, [parse_threshold("ttft.p95<500ms")])["models"][0]
    assert [p["meets_slo"] for p in model["points"]] == [True, True, False, False]
    assert model["max_load_within_slo"] == {"label": "c=2", "load": 2.0}
    assert model["points"][2]["slo_failures"] == ["ttft.p95<500ms: 600 ms"]


def test_max_load_within_slo_is_null_when_nothing_meets_it() -> None:
    model = summarize_run(curve([1, 2], [10, 20], [600, 700]), [parse_threshold("ttft.p50<1")])
    assert model["models"][0]["max_load_within_slo"] is None


def test_peak_throughput_and_lowest_ttft() -> None:
    model = summarize_run(curve([1, 2, 4], [10, 30, 20], [9, 7, 8]))["models"][0]
    assert model["peak_throughput"] == {"label": "c=2", "load": 2.0, "output_tokens_per_s": 30}
    assert model["lowest_ttft"]["label"] == "c=2"
    assert model["lowest_ttft"]["ttft_p50_ms"] == 7


# -- the knee ----------------------------------------------------------------------------


@settings(deadline=None, max_examples=30)
@given(
    saturation=st.sampled_from(LOADS[:-1]),
    per_stream=st.floats(1.0, 1000.0),
    base_ms=st.floats(5.0, 500.0),
)
def test_a_queue_past_saturation_is_the_knee(
    saturation: int, per_stream: float, base_ms: float
) -> None:
    """Past saturation requests wait in a queue: latency grows faster than the load."""
    throughput = [min(load, saturation) * per_stream for load in LOADS]
    latency = [base_ms * max(1.0, load / saturation) ** 2 for load in LOADS]
    model = summarize_run(curve(LOADS, throughput, latency))["models"][0]
    knee = model["knee"]
    assert knee is not None
    assert knee["label"] == f"c={saturation}"
    assert knee["load"] == saturation
    assert knee["reason"].startswith(f"c={saturation} → c={saturation * 2}: throughput +0.0%")
    assert knee["reason"].endswith("3.0× the load increase")
    assert model["saturation"]["label"] == knee["label"]


@settings(deadline=None, max_examples=30)
@given(
    saturation=st.sampled_from(LOADS[:-1]),
    per_stream=st.floats(1.0, 1000.0),
    base_ms=st.floats(5.0, 500.0),
)
def test_sharing_a_saturated_server_is_saturation_without_a_knee(
    saturation: int, per_stream: float, base_ms: float
) -> None:
    """Latency in proportion to load past saturation: shared, not queued (Little's law)."""
    throughput = [min(load, saturation) * per_stream for load in LOADS]
    latency = [base_ms * max(1.0, load / saturation) for load in LOADS]
    model = summarize_run(curve(LOADS, throughput, latency))["models"][0]
    assert model["saturation"] is not None
    assert model["saturation"]["label"] == f"c={saturation}"
    assert model["knee"] is None


def test_one_busy_thread_and_four_slots_saturate_at_one_and_queue_past_four() -> None:
    """llama-server -t 1 -np 4 on 2 cores, as measured (tok/s and TTFT p95 at c=1..16)."""
    doc = curve(
        [1, 2, 4, 8, 16], [57.1, 56.7, 64.8, 64.6, 64.9], [231.9, 456.2, 883.2, 2897.9, 6823.9]
    )
    model = summarize_run(doc)["models"][0]
    assert model["saturation"]["label"] == "c=1"
    assert model["knee"]["label"] == "c=4"
    assert "TTFT p95 +228%, 2.3× the load increase" in model["knee"]["reason"]


@settings(deadline=None, max_examples=30)
@given(per_stream=st.floats(1.0, 1000.0), base_ms=st.floats(5.0, 500.0), rise=st.floats(0, 0.5))
def test_no_knee_on_a_linear_curve(per_stream: float, base_ms: float, rise: float) -> None:
    """Throughput grows with load: latency may rise, but the capacity is not used up."""
    throughput = [load * per_stream for load in LOADS]
    latency = [base_ms * (1 + rise) ** i for i in range(len(LOADS))]
    assert summarize_run(curve(LOADS, throughput, latency))["models"][0]["knee"] is None


def test_no_knee_when_latency_stays_flat() -> None:
    """A flat throughput with flat latency is a client-side limit, not saturation."""
    doc = curve([1, 2, 4], [100, 100, 100], [50, 50, 50])
    assert summarize_run(doc)["models"][0]["knee"] is None


def test_knee_reason_says_the_numbers() -> None:
    doc = curve([4, 8, 16], [284, 458, 460.7], [71.0, 74.7, 616.4])
    knee = summarize_run(doc)["models"][0]["knee"]
    assert knee == {
        "label": "c=8",
        "load": 8.0,
        "reason": (
            "c=8 → c=16: throughput +0.6% for +100% load, TTFT p95 +725%, 7.3× the load increase"
        ),
    }


def test_knee_thresholds_are_the_documented_ones() -> None:
    # Just inside both limits: efficiency 0.25 is not < 0.25; a rise of 10% is not > 10%.
    doc = curve([4, 8], [100, 100 * (1 + KNEE_EFFICIENCY)], [100, 100 * (1 + KNEE_LATENCY_RISE)])
    assert summarize_run(doc)["models"][0]["saturation"] is None
    doc = curve([4, 8], [100, 124], [100, 120])
    assert summarize_run(doc)["models"][0]["saturation"] is not None
    assert summarize_run(doc)["models"][0]["knee"] is None
    # A doubling of load: latency +150% is exactly 1.5x as fast, not faster; +151% is.
    doc = curve([4, 8], [100, 100], [100, 100 * (1 + KNEE_QUEUE_FACTOR)])
    assert summarize_run(doc)["models"][0]["knee"] is None
    doc = curve([4, 8], [100, 100], [100, 251])
    assert summarize_run(doc)["models"][0]["knee"] is not None


def test_knee_uses_e2e_without_ttft_and_requests_without_tokens() -> None:
    stages = [
        make_stage(
            concurrency=c,
            ttft_ms=[],
            e2e_ms=[e2e] * 40,
            sent=40,
            requests_per_s=rps,
            output_tokens=0,
            output_tokens_per_s=0.0,
        )
        for c, rps, e2e in ((2, 4.0, 500.0), (4, 4.1, 1000.0))
    ]
    model = summarize_run(make_doc(stages))["models"][0]
    assert model["saturation"] is not None
    assert model["saturation"]["label"] == "c=2"
    assert "E2E p95 +100%" in model["saturation"]["reason"]
    assert model["knee"] is None  # E2E in proportion to load: shared, not queued


# -- Little's law and the harness --------------------------------------------------------


def _little(stage: dict[str, Any]) -> dict[str, Any]:
    point: dict[str, Any] = summarize_run(make_doc([stage]))["models"][0]["points"][0]
    little: dict[str, Any] = point["littles_law"]
    return little


def test_idle_workers_mean_the_harness_set_the_pace() -> None:
    little = _little(make_stage(concurrency=8, pacing={"busy_fraction": 0.6}))
    assert little["harness_bound"] is True
    assert little["busy_fraction"] == 0.6
    assert "60%" in little["note"]


def test_busy_workers_are_not_flagged() -> None:
    stage = make_stage(concurrency=4, ttft_ms=[50.0] * 40, duration_s=4.0, e2e_ms=[400.0] * 40)
    stage["pacing"] = {"busy_fraction": 0.97}
    little = _little(stage)
    assert little["in_flight_expected"] == pytest.approx(4.0, rel=0.01)
    assert (little["harness_bound"], little["note"]) == (False, None)


def test_too_few_in_flight_by_littles_law() -> None:
    # 40 requests of 100 ms over 10 s at c=8: 0.4 in flight of 8.
    stage = make_stage(concurrency=8, ttft_ms=[50.0] * 40, e2e_ms=[100.0] * 40)
    little = _little(stage)
    assert little["in_flight_expected"] == pytest.approx(0.4, rel=0.01)
    assert little["harness_bound"] is True
    assert "Little's law" in little["note"]


def test_littles_law_needs_two_requests_per_worker() -> None:
    stage = make_stage(concurrency=32, ttft_ms=[50.0] * 40, e2e_ms=[100.0] * 40)
    assert _little(stage)["harness_bound"] is False


def test_measured_concurrency_wins_over_littles_law() -> None:
    """Fast failures lower ok-throughput × ok-latency but held slots all the same."""
    stage = make_stage(concurrency=8, ttft_ms=[50.0] * 40, e2e_ms=[100.0] * 40)
    stage["achieved_concurrency"] = 7.8
    assert _little(stage)["harness_bound"] is False


def test_open_loop_falling_behind_is_flagged() -> None:
    # 100 requests offered at 10/s (a 10 s schedule) went out over 20 s, ever later.
    stage = make_stage(
        rate=10.0,
        ttft_ms=[50.0] * 100,
        e2e_ms=[200.0] * 100,
        schedule_lag_ms=[i * 100.0 for i in range(100)],
        duration_s=20.2,
    )
    little = _little(stage)
    assert little["in_flight_target"] is None
    assert little["harness_bound"] is True
    assert "of the 10/s offered" in little["note"]


def test_open_loop_on_schedule_is_not_flagged() -> None:
    """A random schedule that ran short of its mean rate is not the harness's fault."""
    stage = make_stage(rate=10.0, ttft_ms=[50.0] * 100, e2e_ms=[200.0] * 100, duration_s=20.2)
    assert _little(stage)["harness_bound"] is False
    # On time, and the response tail does not count as sending time.
    stage = make_stage(rate=10.0, ttft_ms=[50.0] * 100, e2e_ms=[5000.0] * 100, duration_s=14.9)
    assert _little(stage)["harness_bound"] is False


def test_merged_stage_load_counts_every_generator() -> None:
    stage = make_stage(concurrency=4, generators=3)
    (point,) = summarize_run(make_doc([stage]))["models"][0]["points"]
    assert point["load"] == 12.0
    assert point["label"] == "c=4 ×3"
    assert point["littles_law"]["in_flight_target"] == 12.0


def test_empty_stage_summarises_without_dividing_by_zero() -> None:
    stage = make_stage(
        ttft_ms=[], sent=0, duration_s=0.0, requests_per_s=0.0, output_tokens_per_s=0.0
    )
    summary = summarize_run(make_doc([stage, make_stage(concurrency=8, ttft_ms=[])]))
    for point in summary["models"][0]["points"]:
        assert point["error_rate"] == 0.0
        assert all(math.isfinite(v) for v in point["ttft_ms"].values())
    assert summary["models"][0]["lowest_ttft"] is None
    assert summary["models"][0]["knee"] is None
