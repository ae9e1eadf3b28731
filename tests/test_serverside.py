"""The server's side of a stage, by value: TTFT splits, /metrics figures, means, cold start.

Figures come from small hand-written dicts shaped as a result file holds them; the
llama.cpp numbers are those of a real llama-server run (4 slots, c=1..16).
"""

from __future__ import annotations

from typing import Any

import pytest

from loadbench.observe import serverside
from loadbench.observe.serverside import MeanSplit, TtftSplit


def lat(p50: float, p95: float, *, mean: float | None = None, count: int = 16) -> dict[str, Any]:
    return {"count": count, "mean": p50 if mean is None else mean, "p50": p50, "p95": p95}


def llamacpp_stage(label: str, ttft: float, prefill: float, outside: float) -> dict[str, Any]:
    return {
        "label": label,
        "latency_ms": {
            "ttft": lat(ttft, ttft * 1.1),
            "server_prefill": lat(prefill, prefill * 1.05),
            "ttft_outside_prefill": lat(outside, outside * 1.2),
            "server_decode": lat(1323.0, 1736.7),
        },
    }


def split(label: str, ttft: float, outside: float) -> TtftSplit:
    return TtftSplit(label, ttft, ttft - outside, outside, None, None, None, None)


# --- per-response timings ---------------------------------------------------------------


def test_ttft_split_reads_the_servers_histograms() -> None:
    got = serverside.ttft_split(llamacpp_stage("c=8", 2584.6, 638.0, 1940.5))
    assert got is not None
    assert (got.label, got.ttft_p50_ms, got.prefill_p50_ms, got.outside_p50_ms) == (
        "c=8",
        2584.6,
        638.0,
        1940.5,
    )
    assert got.prefill_p95_ms == pytest.approx(669.9)
    assert got.decode_p50_ms == 1323.0
    assert got.outside_share == pytest.approx(1940.5 / 2584.6)


def test_no_server_prefill_means_no_split() -> None:
    assert serverside.ttft_split({"label": "c=1", "latency_ms": {"ttft": lat(50, 60)}}) is None
    empty = llamacpp_stage("c=1", 50, 40, 10)
    empty["latency_ms"]["server_prefill"]["count"] = 0
    assert serverside.ttft_split(empty) is None


def test_outside_share_needs_a_ttft() -> None:
    assert TtftSplit("c=1", None, 1.0, 1.0, None, None, None, None).outside_share is None
    assert TtftSplit("c=1", 0.0, 1.0, 1.0, None, None, None, None).outside_share is None
    assert TtftSplit("c=1", 10.0, 9.0, None, None, None, None, None).outside_share is None


SWEEP = [
    split("c=1", 214.4, 4.0),
    split("c=2", 235.9, 13.7),
    split("c=4", 870.4, 212.6),
    split("c=8", 2584.6, 1940.5),
    split("c=16", 2916.4, 2465.8),
]


def test_the_reading_names_where_waiting_dominates_from_the_numbers() -> None:
    assert serverside.queue_reading(SWEEP) == (
        "from c=8 most of TTFT p50 (75%, 85%) is spent waiting outside prefill: "
        "requests queue for a slot."
    )


def test_the_reading_adds_the_servers_queue_when_it_saw_one() -> None:
    text = serverside.queue_reading(SWEEP, {"c=4": 0.0, "c=8": 4.0, "c=16": 12.0})
    assert text is not None
    assert text.endswith("; the server reports up to 12 requests waiting at once.")
    quiet = serverside.queue_reading(SWEEP, {"c=8": 0.0, "c=16": None})
    assert quiet is not None
    assert quiet.endswith("queue for a slot.")


def test_the_reading_says_at_for_stages_that_are_not_the_tail() -> None:
    only_last = serverside.queue_reading([*SWEEP[:4], split("c=16", 3000.0, 1000.0)])
    assert only_last is not None
    assert only_last.startswith("at c=8 most")
    last = serverside.queue_reading([*SWEEP[:3], split("c=8", 900.0, 300.0), SWEEP[4]])
    assert last is not None
    assert last.startswith("at c=16 most of TTFT p50 (85%)")


@pytest.mark.parametrize(
    "splits",
    [
        [],
        SWEEP[:3],  # outside prefill never dominates
        [split("c=1", 100.0, 80.0), split("c=8", 110.0, 90.0)],  # network at every load
        [split("c=1", 100.0, 80.0)],  # one stage: nothing to grow from
        [TtftSplit("c=1", 100.0, 90.0, None, *(None,) * 4), split("c=8", 900.0, 800.0)],
    ],
)
def test_no_reading_without_a_wait_that_grows_with_load(splits: list[TtftSplit]) -> None:
    assert serverside.queue_reading(splits) is None


# --- /metrics figures -------------------------------------------------------------------


LLAMACPP_METRICS = {
    "delta": {
        "llamacpp:prompt_tokens_total": 300.0,
        "llamacpp:prompt_tokens_cached_total": 100.0,
        "llamacpp:tokens_predicted_total": 544.0,
    },
    "peak": {"llamacpp:requests_processing": 4.0, "llamacpp:requests_deferred": 4.0},
    "after": {"llamacpp:requests_processing": 0.0},
}

M, N = 'model_name="m"', 'model_name="n"'
VLLM_METRICS = {
    "delta": {
        f"vllm:prompt_tokens_total{{{M}}}": 600.0,
        f"vllm:prompt_tokens_total{{{N}}}": 400.0,
        f"vllm:generation_tokens_total{{{M}}}": 512.0,
        f"vllm:prefix_cache_hits_total{{{M}}}": 250.0,
        f"vllm:prefix_cache_queries_total{{{M}}}": 1000.0,
        f"vllm:request_queue_time_seconds_sum{{{M}}}": 3.2,
        f"vllm:request_queue_time_seconds_count{{{M}}}": 16.0,
        f"vllm:request_prefill_time_seconds_sum{{{M}}}": 0.8,
        f"vllm:request_prefill_time_seconds_count{{{M}}}": 16.0,
        f"vllm:request_decode_time_seconds_sum{{{M}}}": 8.0,
        f"vllm:request_decode_time_seconds_count{{{M}}}": 16.0,
        f"vllm:time_to_first_token_seconds_sum{{{M}}}": 4.0,
        f"vllm:time_to_first_token_seconds_count{{{M}}}": 16.0,
    },
    "peak": {
        f"vllm:num_requests_running{{{M}}}": 8.0,
        f"vllm:num_requests_running{{{N}}}": 2.0,
        f"vllm:num_requests_waiting{{{M}}}": 5.0,
        f"vllm:gpu_cache_usage_perc{{{M}}}": 0.4,
        f"vllm:gpu_cache_usage_perc{{{N}}}": 0.7,
    },
    "after": {},
}


def test_llamacpp_figures_and_its_uncached_prompt_counter() -> None:
    got = serverside.server_figures(LLAMACPP_METRICS)
    assert got == serverside.ServerFigures(
        kind="llama.cpp",
        running_peak=4.0,
        waiting_peak=4.0,
        prompt_tokens=300.0,
        cached_tokens=100.0,
        cache_hit_share=0.25,  # its prompt counter leaves the cached 100 out
        generated_tokens=544.0,
        kv_cache_peak=None,
    )


def test_vllm_figures_sum_label_sets_but_take_the_highest_ratio() -> None:
    got = serverside.server_figures(VLLM_METRICS)
    assert got is not None
    assert (got.kind, got.running_peak, got.waiting_peak) == ("vLLM", 10.0, 5.0)
    assert (got.prompt_tokens, got.generated_tokens, got.cached_tokens) == (1000.0, 512.0, 250.0)
    assert got.cache_hit_share == 0.25  # hits / queries
    assert got.kv_cache_peak == 0.7  # older name, highest label set


def test_vllm_newer_kv_cache_name_wins() -> None:
    peak = {**VLLM_METRICS["peak"], f"vllm:kv_cache_usage_perc{{{M}}}": 0.2}
    got = serverside.server_figures({**VLLM_METRICS, "peak": peak})
    assert got is not None
    assert got.kv_cache_peak == 0.2


def test_sglang_cache_share_from_its_counter_else_its_gauge() -> None:
    counted = {
        "delta": {"sglang:prompt_tokens_total": 800.0, "sglang:cached_tokens_total": 200.0},
        "peak": {"sglang:num_queue_reqs": 3.0, "sglang:token_usage": 0.5},
        "after": {"sglang:cache_hit_rate": 0.9},
    }
    got = serverside.server_figures(counted)
    assert got is not None
    assert (got.kind, got.waiting_peak, got.kv_cache_peak) == ("SGLang", 3.0, 0.5)
    assert got.cache_hit_share == 0.25
    gauge_only = {**counted, "delta": {"sglang:prompt_tokens_total": 800.0}}
    got = serverside.server_figures(gauge_only)
    assert got is not None
    assert got.cache_hit_share == 0.9
    assert got.cached_tokens is None


@pytest.mark.parametrize(
    "metrics",
    [None, {}, {"delta": {}, "peak": {"tgi_queue_size": 3.0}, "after": {}}],
)
def test_no_figures_without_a_known_server(metrics: dict[str, Any] | None) -> None:
    assert serverside.server_figures(metrics) is None


def test_a_zero_prompt_count_gives_no_hit_share() -> None:
    quiet = {"delta": {"llamacpp:prompt_tokens_total": 0.0}, "peak": {}, "after": {}}
    got = serverside.server_figures(quiet)
    assert got is not None
    assert got.cache_hit_share is None
    assert got.cached_tokens is None


# --- /metrics histograms: stage means ----------------------------------------------------


def test_histogram_mean_sums_label_sets() -> None:
    delta = {
        f"vllm:x_seconds_sum{{{M}}}": 1.0,
        f"vllm:x_seconds_count{{{M}}}": 2.0,
        f"vllm:x_seconds_sum{{{N}}}": 3.0,
        f"vllm:x_seconds_count{{{N}}}": 2.0,
    }
    assert serverside.histogram_mean(delta, "vllm:x_seconds") == (1.0, 4.0)
    assert serverside.histogram_mean(delta, "vllm:y_seconds") is None
    assert serverside.histogram_mean({"a_sum": 0.0, "a_count": 0.0}, "a") is None


def test_vllm_split_reads_its_phase_histograms() -> None:
    got = serverside.vllm_split(VLLM_METRICS)
    assert got == MeanSplit("vLLM", 16.0, 0.2, 0.05, 0.5, 0.25)
    assert got is not None
    assert got.outside_ms(300.0) == pytest.approx(50.0)


def test_sglang_split_derives_prefill_and_decode() -> None:
    metrics = {
        "delta": {
            "sglang:queue_time_seconds_sum": 1.6,
            "sglang:queue_time_seconds_count": 16.0,
            "sglang:time_to_first_token_seconds_sum": 4.8,
            "sglang:time_to_first_token_seconds_count": 16.0,
            "sglang:e2e_request_latency_seconds_sum": 16.0,
            "sglang:e2e_request_latency_seconds_count": 16.0,
        }
    }
    got = serverside.sglang_split(metrics)
    assert got is not None
    assert (got.kind, got.requests) == ("SGLang", 16.0)
    assert (got.queue_s, got.ttft_s) == pytest.approx((0.1, 0.3))
    assert (got.prefill_s, got.decode_s) == pytest.approx((0.2, 0.7))
    assert got.note
    assert "TTFT less its queue" in got.note
    only_ttft = {"delta": {k: v for k, v in metrics["delta"].items() if "first_token" in k}}
    partial = serverside.sglang_split(only_ttft)
    assert partial is not None
    assert partial.prefill_s is None
    assert partial.decode_s is None


def test_mean_split_asks_each_server_kind_in_turn() -> None:
    assert all(callable(f) for f in serverside.MEAN_SPLITS)
    vllm = serverside.mean_split(VLLM_METRICS)
    assert vllm is not None
    assert vllm.kind == "vLLM"
    sglang = {"delta": {"sglang:queue_time_seconds_sum": 1.0, "sglang:queue_time_seconds_count": 4}}
    found = serverside.mean_split(sglang)
    assert found is not None
    assert found.kind == "SGLang"
    assert found.queue_s == 0.25
    assert serverside.mean_split(LLAMACPP_METRICS) is None  # no per-request histograms
    assert serverside.mean_split(None) is None


def test_outside_ms_falls_back_to_queue_plus_prefill() -> None:
    no_ttft = MeanSplit("vLLM", 4.0, 0.1, 0.05, None, None)
    assert no_ttft.outside_ms(200.0) == pytest.approx(50.0)
    assert no_ttft.outside_ms(None) is None
    assert MeanSplit("vLLM", 4.0, 0.1, None, None, None).outside_ms(200.0) is None


# --- cold start ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cold", "text"),
    [
        (
            {"ready_s": 0.68, "first_token_s": 0.93, "first_request_ttft_s": 0.25},
            "cold start: ready 0.68 s, first token 0.93 s after launch "
            "(first request's TTFT 0.25 s)",
        ),
        (
            {"ready_s": 0.68, "first_token_s": 0.93, "first_request": "ok"},
            "cold start: ready 0.68 s, first token 0.93 s after launch",
        ),
        (
            {"ready_s": 1.5, "first_token_s": None, "first_request": "timeout"},
            "cold start: ready 1.50 s after launch; the first request failed (timeout)",
        ),
        ({"ready_s": "soon", "first_token_s": True}, "cold start: not timed"),
    ],
)
def test_cold_start_text(cold: dict[str, Any], text: str) -> None:
    assert serverside.cold_start_text({"base_url": "http://h/v1", "cold_start": cold}) == text


@pytest.mark.parametrize("target", [None, {}, {"cold_start": None}, {"cold_start": 3}])
def test_no_cold_start_no_text(target: dict[str, Any] | None) -> None:
    assert serverside.cold_start_text(target) is None
