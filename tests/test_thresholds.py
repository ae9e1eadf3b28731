"""Thresholds: the grammar (by example and by property), SLO tables, checks on stages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadbench.errors import UsageError
from loadbench.metrics import decode, percentile_ms
from loadbench.thresholds import (
    GRAMMAR,
    LATENCY_METRICS,
    RATE_METRICS,
    Op,
    Threshold,
    evaluate,
    format_threshold,
    parse_metric,
    parse_threshold,
    slo_request_limits,
    slo_thresholds,
    stage_value,
)
from tests.test_analysis import make_stage


@pytest.mark.parametrize(
    ("text", "metric", "stat", "op", "value"),
    [
        ("ttft.p95<500ms", "ttft", "p95", Op.LT, 500.0),
        ("itl.p99 <= 0.1s", "itl", "p99", Op.LE, 100.0),
        ("e2e.max<8000", "e2e", "max", Op.LT, 8000.0),
        ("tpot.mean < 250us", "tpot", "mean", Op.LT, 0.25),
        ("ttft.p99.9<1.5s", "ttft", "p99.9", Op.LT, 1500.0),
        ("  schedule_lag.p50 >= 2  ", "schedule_lag", "p50", Op.GE, 2.0),
        ("TTFT.P95.0<1e3MS", "ttft", "p95", Op.LT, 1000.0),
        ("error_rate<1%", "error_rate", None, Op.LT, 0.01),
        ("error_rate<=0.01", "error_rate", None, Op.LE, 0.01),
        ("requests_per_s>=5", "requests_per_s", None, Op.GE, 5.0),
        ("output_tokens_per_s > 100/s", "output_tokens_per_s", None, Op.GT, 100.0),
        ("goodput_rps>2", "goodput_rps", None, Op.GT, 2.0),
    ],
)
def test_parse_examples(text: str, metric: str, stat: str | None, op: Op, value: float) -> None:
    t = parse_threshold(text)
    assert (t.metric, t.stat, t.op, t.source) == (metric, stat, op, text)
    assert t.value == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ttft<500", "ttft needs a statistic, e.g. ttft.p95"),
        ("ttft.p95", "no comparison"),
        ("ttft.p95 = 5", "'=' is not a comparison here"),
        ("ttft.p95 == 5", "'==' is not a comparison here"),
        ("ttfx.p95<5", "unknown metric 'ttfx' (did you mean 'ttft'?)"),
        ("ttft.p100<5", "percentile 'p100' is out of range"),
        ("ttft.p0<5", "percentile 'p0' is out of range"),
        ("ttft.median<5", "unknown statistic 'median'"),
        ("requests_per_s.p95>5", "requests_per_s takes no statistic"),
        ("error_rate<5", "a bare error_rate is a fraction 0..1, got 5 (write 5%?)"),
        ("error_rate<101%", "at most 100%"),
        ("ttft.p95<5min", "unknown unit 'min' for a latency"),
        ("requests_per_s>5ms", "unknown unit 'ms' for requests_per_s"),
        ("ttft.p95<-5", "expected a number after <, got '-5'"),
        ("ttft.p95<", "expected a number after <, got ''"),
        ("ttft.p95<1e999", "too large"),
        ("<5", "no metric before the comparison"),
    ],
)
def test_parse_errors_say_what_is_wrong_and_show_the_grammar(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_threshold(text)
    message = str(info.value)
    assert message.startswith(f"--threshold {text!r}: ")
    assert problem in message.splitlines()[0]
    assert message.endswith(GRAMMAR)
    assert info.value.exit_code == 2


_STATS = st.one_of(
    st.sampled_from(["p50", "p90", "p95", "p99", "p99.9", "mean", "min", "max"]),
    st.integers(1, 99).map(lambda n: f"p{n}"),
)
_NUMBERS = st.one_of(
    st.integers(0, 10**6).map(str),
    st.decimals(0, 10**6, places=3, allow_nan=False, allow_infinity=False).map(str),
)
_SPACE = st.sampled_from(["", " ", "  "])


@st.composite
def expressions(draw: st.DrawFn) -> tuple[str, str, str | None, str, float]:
    """(text, metric, stat, op, expected value) from the grammar."""
    metric = draw(st.sampled_from(LATENCY_METRICS + RATE_METRICS))
    stat = draw(_STATS) if metric in LATENCY_METRICS else None
    op = draw(st.sampled_from([str(o) for o in Op]))
    number = draw(_NUMBERS)
    x = float(number)
    if metric in LATENCY_METRICS:
        unit, scale = draw(st.sampled_from([("", 1.0), ("ms", 1.0), ("us", 0.001), ("s", 1e3)]))
        value = x * scale
    elif metric == "error_rate":
        if x <= 1 and draw(st.booleans()):
            unit, value = "", x
        else:
            x = min(x, 100.0)
            number = repr(x)
            unit, value = "%", x / 100
    else:
        unit = draw(st.sampled_from(["", "/s"]))
        value = x
    name = metric if stat is None else f"{metric}.{stat}"
    sp = draw(_SPACE), draw(_SPACE), draw(_SPACE), draw(_SPACE)
    text = f"{sp[0]}{name}{sp[1]}{op}{sp[2]}{number}{unit}{sp[3]}"
    return text, metric, stat, op, value


@given(expressions())
def test_generated_expressions_parse_to_their_parts(
    expr: tuple[str, str, str | None, str, float],
) -> None:
    text, metric, stat, op, value = expr
    t = parse_threshold(text)
    assert (t.metric, t.stat, t.op, t.source) == (metric, stat, Op(op), text)
    assert t.value == pytest.approx(value, rel=1e-12, abs=1e-12)
    again = parse_threshold(format_threshold(t.metric, t.stat, t.op, t.value))
    assert (again.metric, again.stat, again.op, again.value) == (t.metric, t.stat, t.op, t.value)


_GRAMMAR_ALPHABET = "ttftitle2e_rapsmux.p0123456789<>=!%/ .-+µe"


@given(st.one_of(st.text(), st.text(alphabet=_GRAMMAR_ALPHABET)))
def test_garbage_raises_only_usage_error(text: str) -> None:
    message = "--threshold "
    try:
        t = parse_threshold(text)
    except UsageError as exc:
        message = str(exc)
    else:
        assert isinstance(t, Threshold)
    assert message.startswith("--threshold ")


def test_parse_metric() -> None:
    assert parse_metric("ttft.p95") == ("ttft", "p95")
    assert parse_metric("e2e.p99.90") == ("e2e", "p99.9")
    assert parse_metric("requests_per_s") == ("requests_per_s", None)
    with pytest.raises(UsageError, match=r"^--metric 'ttft': ttft needs a statistic"):
        parse_metric("ttft")


# -- the [slo] table ---------------------------------------------------------------------


def test_slo_table_becomes_upper_bounds() -> None:
    table = {
        "ttft_ms": {"p95": 500},
        "itl_ms": {"p99": 100},
        "e2e_ms": {"p95": 8000, "p99": 12000.5, "p99.9": 20000},
        "error_rate": 0.01,
    }
    thresholds, problems = slo_thresholds(table)
    assert problems == []
    assert [t.source for t in thresholds] == [
        "ttft.p95<=500ms",
        "itl.p99<=100ms",
        "e2e.p95<=8000ms",
        "e2e.p99<=12000.5ms",
        "e2e.p99.9<=20000ms",
        "error_rate<=0.01",
    ]
    assert all(t.op is Op.LE for t in thresholds)
    for t in thresholds:  # summary.slo keeps sources; merge parses them back
        assert parse_threshold(t.source) == t


def test_slo_table_reports_every_problem() -> None:
    table = {
        "ttf_ms": {"p95": 1},
        "ttft_ms": {"p95": -1, "p100": 3, "p9x": 4},
        "itl_ms": 100,
        "tpot_ms": {},
        "e2e_ms": {"p95": True},
        "error_rate": 5,
    }
    thresholds, problems = slo_thresholds(table)
    assert thresholds == ()
    assert problems == [
        "slo: unknown key 'ttf_ms' (did you mean 'ttft_ms'?)",
        "slo.ttft_ms.p95: expected a positive number, got -1",
        "slo.ttft_ms: percentile 'p100' is out of range: use 0 < N < 100 (or min, max)",
        "slo.ttft_ms: unknown key 'p9x' (did you mean 'p99'?): "
        "expected pN (0 < N < 100), mean, min or max",
        "slo.itl_ms: expected a table such as { p95 = 500 }, got 100",
        "slo.tpot_ms: expected a table such as { p95 = 500 }, got {}",
        "slo.e2e_ms.p95: expected a positive number, got true",
        "slo.error_rate: expected a number from 0 to 1, got 5",
    ]


def test_no_slo_table_and_not_a_table() -> None:
    assert slo_thresholds(None) == ((), [])
    assert slo_thresholds([1], key="x.slo") == ((), ["x.slo: expected a table, got [1]"])


def test_request_limits_are_per_request_percentile_upper_bounds() -> None:
    thresholds = [
        parse_threshold(text)
        for text in (
            "ttft.p95<500ms",
            "itl.p99<=0.1s",
            "tpot.p50<=20.5",
            "e2e.p99<8s",
            "e2e.p99<8s",
            "e2e.max<9s",
            "ttft.mean<100",
            "ttft.p95>1",
            "schedule_lag.p99<5",
            "error_rate<1%",
        )
    ]
    assert slo_request_limits(thresholds) == (
        ("ttft", 95.0, 499_999),
        ("itl", 99.0, 100_000),
        ("tpot", 50.0, 20_500),
        ("e2e", 99.0, 7_999_999),
    )


# -- checking stages ---------------------------------------------------------------------


def test_check_reads_stored_stats_and_histograms() -> None:
    stage = make_stage(ttft_ms=[float(i) for i in range(1, 1001)])
    assert parse_threshold("ttft.p95<951").check(stage).passed
    result = parse_threshold("ttft.p95<900").check(stage)
    assert (result.passed, result.actual) == (False, stage["latency_ms"]["ttft"]["p95"])
    assert result.describe() == f"ttft.p95<900: {result.actual:g} ms"
    deep = parse_threshold("ttft.p99.9<2s").check(stage)
    expected = percentile_ms(decode(stage["histograms"]["ttft"]), 99.9)
    assert (deep.passed, deep.actual) == (True, expected)
    assert stage_value(stage, "ttft", "p99.9") == expected
    assert stage_value(stage, "ttft", "min") == stage["latency_ms"]["ttft"]["min"]


def test_p99_9_without_stored_summary_uses_the_histogram_only() -> None:
    stage = make_stage(ttft_ms=[float(i) for i in range(1, 101)])
    del stage["latency_ms"]["ttft"]
    assert stage_value(stage, "ttft", "p95") == pytest.approx(95.0, rel=1e-3)
    assert stage_value(stage, "ttft", "max") == pytest.approx(100.0, rel=1e-3)


def test_rates() -> None:
    stage = make_stage(ttft_ms=[10.0] * 90, failed=10, requests_per_s=9.0)
    assert parse_threshold("error_rate<=10%").check(stage).passed
    failed = parse_threshold("error_rate<5%").check(stage)
    assert (failed.passed, failed.actual) == (False, 0.1)
    assert failed.describe() == "error_rate<5%: 10%"
    assert parse_threshold("requests_per_s>=9").check(stage).passed
    assert not parse_threshold("requests_per_s>9/s").check(stage).passed
    assert stage_value(make_stage(ttft_ms=[], sent=0), "error_rate") == 0.0


def test_goodput_when_recorded_and_not_applicable_otherwise() -> None:
    t = parse_threshold("goodput_rps>2")
    assert t.check(make_stage(goodput={"good": 30, "requests_per_s": 3.0})).passed
    assert not t.check(make_stage(goodput={"good": 10, "requests_per_s": 1.0})).passed
    absent = t.check(make_stage())
    assert (absent.passed, absent.actual) == (True, None)
    assert absent.reason == "not measured: the run had no per-request SLO"
    assert t.check(make_stage(goodput=None)).passed


def test_open_loop_metric_in_closed_loop_is_not_applicable() -> None:
    result = parse_threshold("schedule_lag.p99<5").check(make_stage(concurrency=4))
    assert (result.passed, result.actual, result.reason) == (
        True,
        None,
        "not measured in closed loop",
    )
    assert result.describe() == "schedule_lag.p99<5: not measured in closed loop"
    open_loop = make_stage(rate=2.0, schedule_lag_ms=[1.0] * 20)
    assert parse_threshold("schedule_lag.p99<5").check(open_loop).passed


def test_no_values_is_a_failure_not_a_pass() -> None:
    """Every request failed: nothing shows the latency promise held."""
    stage = make_stage(ttft_ms=[], sent=10, failed=10)
    result = parse_threshold("ttft.p95<500").check(stage)
    assert (result.passed, result.actual) == (False, None)
    assert "no values" in str(result.reason)
    del stage["latency_ms"]["ttft"]
    assert not parse_threshold("ttft.p99.9<500").check(stage).passed


def test_a_broken_histogram_is_a_usage_error() -> None:
    stage = make_stage()
    stage["histograms"]["ttft"] = "not a histogram"
    with pytest.raises(UsageError, match=r"^m c=4: histograms.ttft: not a loadbench histogram"):
        parse_threshold("ttft.p99.9<5").check(stage)


def test_evaluate_labels_each_stage() -> None:
    stages = [make_stage(concurrency=1), make_stage("n", rate=2.0)]
    thresholds = [parse_threshold("ttft.p95<100"), parse_threshold("error_rate<1%")]
    results = evaluate(thresholds, stages)
    assert [label for label, _ in results] == ["m c=1", "n rate=2/s"]
    assert all(r.passed for _, rs in results for r in rs)
    assert [r.threshold for r in results[0][1]] == thresholds
