"""Compare: percentile intervals, noise-aware verdicts, stage matching, tolerances."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadbench.errors import UsageError
from loadbench.metrics import new_histogram, percentile_ms, record_many
from loadbench.results.compare import (
    DEFAULT_METRICS,
    Verdict,
    compare,
    parse_tolerance,
    percentile_interval_ms,
)
from tests.test_analysis import make_doc, make_stage


def _hist(values_us: list[int]) -> Any:
    h = new_histogram()
    record_many(h, values_us)
    return h


def _lognormal_ms(n: int, seed: int, scale: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [scale * 100 * math.exp(rng.gauss(0, 0.5)) for _ in range(n)]


def _doc(ttft_ms: list[float], **stage: Any) -> dict[str, Any]:
    return make_doc([make_stage(ttft_ms=ttft_ms, **stage)])


def _delta(comparison: Any, metric: str) -> Any:
    (delta,) = [d for d in comparison.deltas if d.metric == metric]
    return delta


# -- percentile_interval_ms --------------------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(
    values=st.lists(st.integers(0, 10_000_000), min_size=1, max_size=300),
    p=st.sampled_from([0.0, 1.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0]),
)
def test_interval_contains_the_sample_percentile(values: list[int], p: float) -> None:
    h = _hist(values)
    low, high = percentile_interval_ms(h, p)
    assert low <= percentile_ms(h, p) <= high
    ordered = sorted(values)
    rank = max(1, math.ceil(len(values) * p / 100))  # nearest rank, on the raw values
    assert low <= ordered[rank - 1] / 1000 <= high


def test_interval_covers_the_true_percentile_about_95_percent_of_the_time() -> None:
    """Exponential(mean 100 ms): the true p95 is 100·ln(20) ms. 400 runs of 200 values.

    The textbook ranks (and widening to bucket edges) make it a little conservative:
    about 98% for this n, exactly 0.99 for this seed.
    """
    rng = random.Random(7)
    true_p95_ms = 100 * math.log(20)
    covered = 0
    for _ in range(400):
        h = _hist([round(rng.expovariate(1 / 100_000)) for _ in range(200)])
        low, high = percentile_interval_ms(h, 95.0)
        covered += low <= true_p95_ms <= high
    assert 0.93 <= covered / 400 <= 0.995


def test_interval_narrows_with_more_samples() -> None:
    small = percentile_interval_ms(_hist([round(v * 1000) for v in _lognormal_ms(100, 1)]), 95)
    large = percentile_interval_ms(_hist([round(v * 1000) for v in _lognormal_ms(10_000, 1)]), 95)
    assert large[1] - large[0] < (small[1] - small[0]) / 3


def test_clustered_values_get_the_interval_of_their_cluster_count() -> None:
    """ITL: 2,000 gaps from 100 requests carry about as much evidence as 100 values."""
    values = [round(v * 1000) for v in _lognormal_ms(2000, 8)]
    h = _hist(values)
    alone = percentile_interval_ms(h, 95)
    grouped = percentile_interval_ms(h, 95, clusters=100)
    per_request = percentile_interval_ms(_hist(values[::20]), 95)
    assert grouped[0] < alone[0]
    assert grouped[1] > alone[1]
    assert (grouped[1] - grouped[0]) > 2.5 * (alone[1] - alone[0])  # sqrt(20) ~ 4.5 in ranks
    assert (grouped[1] - grouped[0]) == pytest.approx(per_request[1] - per_request[0], rel=0.6)
    assert percentile_interval_ms(h, 95, clusters=2000) == alone
    assert percentile_interval_ms(h, 95, clusters=5000) == alone


def test_itl_gaps_are_judged_per_request() -> None:
    """Twins whose gaps are correlated within a request, as real ones are: each request
    draws one pace and its 20 gaps vary 5% around it. Judged as 1,000 independent gaps,
    9 of these 20 twin pairs were flagged at 10%; judged per request, none is."""

    def doc(seed: int) -> dict[str, Any]:
        rng = random.Random(seed + 100)
        per_request = _lognormal_ms(50, seed)
        gaps = [g * (1 + 0.05 * rng.random()) for g in per_request for _ in range(20)]
        return make_doc([make_stage(itl_ms=gaps, e2e_ms=per_request)])

    for seed in range(0, 40, 2):
        result = compare(doc(seed), doc(seed + 1), metrics=["itl.p95"])
        verdict = _delta(result, "itl.p95").verdict
        assert verdict not in (Verdict.REGRESSION, Verdict.IMPROVEMENT), seed


def test_interval_of_nothing_and_bad_percentiles() -> None:
    assert percentile_interval_ms(new_histogram(), 95) == (0.0, 0.0)
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile_interval_ms(new_histogram(), 101)


# -- latency verdicts --------------------------------------------------------------------


def test_a_doubled_p95_with_1000_samples_is_a_regression() -> None:
    base = _doc(_lognormal_ms(1000, 1))
    cand = _doc(_lognormal_ms(1000, 2, scale=2.0))
    result = compare(base, cand, metrics=["ttft.p95"])
    delta = _delta(result, "ttft.p95")
    assert (delta.verdict, delta.regression, delta.worse) == (Verdict.REGRESSION, True, True)
    assert delta.ratio == pytest.approx(2.0, rel=0.15)
    assert delta.stage == "m c=4"
    assert result.regressions == 1


def test_a_halved_p95_is_an_improvement() -> None:
    base = _doc(_lognormal_ms(1000, 1))
    cand = _doc(_lognormal_ms(1000, 2, scale=0.5))
    delta = _delta(compare(base, cand, metrics=["ttft.p95"]), "ttft.p95")
    assert (delta.verdict, delta.regression, delta.worse) == (Verdict.IMPROVEMENT, False, False)


def test_a_doubled_p95_with_10_samples_is_too_few_to_tell() -> None:
    base = _doc(_lognormal_ms(10, 1))
    cand = _doc(_lognormal_ms(10, 2, scale=2.0))
    delta = _delta(compare(base, cand, metrics=["ttft.p95"]), "ttft.p95")
    assert (delta.verdict, delta.regression) == (Verdict.FEW, False)
    assert delta.worse


def test_two_samples_of_one_distribution_are_not_a_regression() -> None:
    """Split one seeded sample in halves, 20 times: disjoint 95% intervals happen to
    about 0.3% of such pairs per metric, so at most one false improvement is allowed."""
    verdicts = []
    for seed in range(20):
        values = _lognormal_ms(2000, seed)
        base, cand = _doc(values[:1000]), _doc(values[1000:])
        result = compare(base, cand, metrics=["ttft.p50", "ttft.p95", "ttft.p99", "e2e.p95"])
        assert result.regressions == 0
        verdicts += [d.verdict for d in result.deltas]
    assert Verdict.REGRESSION not in verdicts
    assert verdicts.count(Verdict.IMPROVEMENT) <= 1


def test_beyond_tolerance_but_within_noise() -> None:
    """p99 of 100 values is the 2nd largest value or so: a 30% jump there is noise."""
    base = _doc(_lognormal_ms(100, 3))
    cand = _doc(_lognormal_ms(100, 4, scale=1.3))
    delta = _delta(compare(base, cand, metrics=["ttft.p99"]), "ttft.p99")
    assert delta.verdict is Verdict.NOISE
    assert not delta.regression


def test_within_tolerance_is_ok_even_when_significant() -> None:
    base = _doc(_lognormal_ms(20_000, 5))
    cand = _doc(_lognormal_ms(20_000, 6, scale=1.05))
    delta = _delta(compare(base, cand, metrics=["ttft.p50"]), "ttft.p50")
    assert (delta.verdict, delta.worse) == (Verdict.OK, True)


def test_mean_is_judged_on_the_tolerance_alone() -> None:
    base = _doc(_lognormal_ms(100, 3))
    cand = _doc(_lognormal_ms(100, 4, scale=1.5))
    assert _delta(compare(base, cand, metrics=["ttft.mean"]), "ttft.mean").regression


def test_min_samples_is_configurable() -> None:
    base, cand = _doc(_lognormal_ms(10, 1)), _doc(_lognormal_ms(10, 2, scale=10.0))
    delta = _delta(compare(base, cand, metrics=["ttft.p50"], min_samples=5), "ttft.p50")
    assert delta.verdict is Verdict.REGRESSION


# -- real runs ---------------------------------------------------------------------------

RUN = """
name = "{name}"
[target.simulate]
ttft_ms = {ttft_ms}
itl_ms = {itl_ms}
slots = 16
jitter = 0.1
batch_itl_factor = 0
[[models]]
name = "sim-model"
[prompts]
items = ["alpha beta", "gamma delta", "epsilon"]
[request]
max_tokens = 4
[load]
concurrency = [8, 16]
requests = 64
"""


def side_by_side(folder: Path, runs: dict[str, float]) -> dict[str, dict[str, Any]]:
    """One ``loadbench run`` per entry (name: timing factor), all at once, each with its own
    simulator: whatever else the machine is doing hits them alike."""
    started = []
    for name, factor in runs.items():
        scenario = folder / f"{name}.toml"
        text = RUN.format(name=name, ttft_ms=150 * factor, itl_ms=40 * factor)
        scenario.write_text(text, encoding="utf-8")
        out = folder / f"{name}.json"
        command = [sys.executable, "-m", "loadbench", "run", str(scenario), "-o", str(out)]
        started.append((name, out, subprocess.Popen([*command, "-q", "--overwrite"])))
    for _, _, proc in started:
        assert proc.wait(timeout=120) == 0
    return {name: orjson.loads(out.read_bytes()) for name, out, _ in started}


def test_twin_runs_pass_at_10_percent_and_a_20_percent_slowdown_fails(tmp_path: Path) -> None:
    """The tolerance the docs recommend, on real runs of the simulator (jitter 10%).

    A baseline, its twin and a candidate with TTFT and ITL 20% slower run side by side
    (2 stages x 64 requests, c=8 and c=16, 150 ms TTFT, 40 ms gaps, 4 tokens: ~3 s alone).
    Measured on the shared 2-core machine at load average 5.5-7: side by side, twins
    passed 11 of 11 and the slowdown failed 10 of 11 (missed once, at load 6.9, when the
    baseline itself ran 1.9x slow); one after another with 4 ms gaps, twins failed 2 of 6
    on ttft/itl/e2e p95 and throughput. Hence timings large against scheduling noise, runs
    side by side, and up to three attempts: a comparison that flags twins, or misses 20%,
    fails all three.
    """
    seen = []
    for _ in range(3):
        runs = side_by_side(tmp_path, {"base": 1.0, "twin": 1.0, "slow": 1.2})
        twin = compare(runs["base"], runs["twin"], max_regression=0.10)
        slow = compare(runs["base"], runs["slow"], max_regression=0.10)
        if twin.regressions == 0 and slow.regressions > 0:
            return
        seen.append((twin.regressions, slow.regressions))
    pytest.fail(f"(twin, slowdown) regressions per attempt: {seen}")


# -- rates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "verdict"),
    [
        (100.0, Verdict.OK),
        (95.0, Verdict.OK),
        (80.0, Verdict.REGRESSION),
        (120.0, Verdict.IMPROVEMENT),
    ],
)
def test_throughput_on_the_tolerance(candidate: float, verdict: Verdict) -> None:
    base = _doc([50.0] * 40, output_tokens_per_s=100.0)
    cand = _doc([50.0] * 40, output_tokens_per_s=candidate)
    delta = _delta(compare(base, cand), "output_tokens_per_s")
    assert delta.verdict is verdict
    assert delta.worse == (candidate < 100.0)
    assert delta.ratio == candidate / 100.0


@pytest.mark.parametrize(
    ("base", "cand", "verdict"),
    [
        ((0, 1000), (50, 1000), Verdict.REGRESSION),  # 0% → 5% of 1000: real
        ((0, 10), (1, 10), Verdict.NOISE),  # 0 → 1 failure in 10: could be luck
        ((10, 10), (0, 10), Verdict.IMPROVEMENT),  # all failed → none
        ((0, 1000), (5, 1000), Verdict.OK),  # +0.5 points: under the 1-point floor
        ((100, 1000), (105, 1000), Verdict.OK),  # +5% relative: within the tolerance
    ],
)
def test_error_rate(base: tuple[int, int], cand: tuple[int, int], verdict: Verdict) -> None:
    def doc(failed: int, sent: int) -> dict[str, Any]:
        return _doc([50.0] * (sent - failed), failed=failed)

    delta = _delta(compare(doc(*base), doc(*cand)), "error_rate")
    assert delta.verdict is verdict
    assert delta.regression == (verdict is Verdict.REGRESSION)


def test_missing_values_are_reported_not_judged() -> None:
    base, cand = _doc([50.0] * 40), _doc([50.0] * 40)
    delta = _delta(compare(base, cand, metrics=["schedule_lag.p99"]), "schedule_lag.p99")
    assert (delta.verdict, delta.baseline, delta.candidate, delta.ratio) == (
        Verdict.MISSING,
        None,
        None,
        None,
    )


# -- matching ----------------------------------------------------------------------------


def test_stages_are_matched_by_key_and_the_rest_listed() -> None:
    base = make_doc([make_stage(concurrency=c) for c in (1, 4, 8)] + [make_stage("x", rate=2.0)])
    cand = make_doc([make_stage(concurrency=c) for c in (8, 4, 16)] + [make_stage("x", rate=3.0)])
    result = compare(base, cand)
    assert sorted({d.stage for d in result.deltas}) == ["m c=4", "m c=8"]
    assert [d.metric for d in result.deltas[:5]] == list(DEFAULT_METRICS)
    assert result.unmatched_baseline == ("m c=1", "x rate=2/s")
    assert result.unmatched_candidate == ("m c=16", "x rate=3/s")


def test_same_load_in_another_mode_or_model_does_not_match() -> None:
    base = make_doc([make_stage("a", concurrency=2)])
    cand = make_doc([make_stage("b", concurrency=2), make_stage("a", rate=2.0)])
    result = compare(base, cand)
    assert result.deltas == ()
    assert result.unmatched_baseline == ("a c=2",)
    assert result.unmatched_candidate == ("b c=2", "a rate=2/s")


def test_a_stage_twice_in_one_file_is_never_guessed() -> None:
    base = make_doc([make_stage(concurrency=2), make_stage(concurrency=2)])
    cand = make_doc([make_stage(concurrency=2)])
    result = compare(base, cand)
    assert result.deltas == ()
    assert result.unmatched_baseline == ("m c=2", "m c=2")
    assert result.unmatched_candidate == ("m c=2",)


def test_unknown_metric_is_a_usage_error() -> None:
    doc = make_doc([make_stage()])
    with pytest.raises(UsageError, match=r"^--metric 'ttfx.p95': unknown metric 'ttfx'"):
        compare(doc, doc, metrics=["ttfx.p95"])
    with pytest.raises(UsageError, match="needs a statistic"):
        compare(doc, doc, metrics=["e2e"])


# -- tolerance ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("10%", 0.1), ("0.1", 0.1), (" 5 % ", 0.05), ("0", 0.0), ("150%", 1.5), ("1", 1.0)],
)
def test_parse_tolerance(text: str, value: float) -> None:
    assert parse_tolerance(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "%", "ten", "-5%", "10", "nan", "inf", "1e999%", "0x10"])
def test_parse_tolerance_refuses_garbage(text: str) -> None:
    with pytest.raises(UsageError, match=r"^tolerance "):
        parse_tolerance(text)


@given(st.text())
def test_parse_tolerance_raises_only_usage_error(text: str) -> None:
    try:
        value = parse_tolerance(text)
    except UsageError:
        return
    assert math.isfinite(value)
    assert value >= 0
