"""Histogram wrapper and stage accumulator: by value, and by property (hypothesis)."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from loadbench.metrics import (
    CLOSED_LOOP_METRICS,
    HIGHEST_US,
    LOWEST_US,
    OPEN_LOOP_METRICS,
    SIGNIFICANT_FIGURES,
    LatencySummary,
    StageAccumulator,
    decode,
    encode,
    merge,
    new_histogram,
    percentile_ms,
    record,
    record_many,
    summarize,
)
from loadbench.records import ErrorKind, RequestRecord, TokenSource, http_error

MS = 1_000_000  # ns per ms
# A histogram is a 23,552-counter array walked in pure Python: examples are slow but not
# flaky, so no per-example deadline.
_SLOW = settings(deadline=None)
_CHECKED_PERCENTILES = (0.0, 1.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0)

# Small values are exact in the histogram; large ones exercise the coarse buckets.
_VALUE = st.one_of(st.integers(0, 5_000), st.integers(0, HIGHEST_US))
_VALUES = st.lists(_VALUE, max_size=60)


def _histogram(values: list[int]) -> Any:
    h = new_histogram()
    for v in values:
        assert record(h, v)
    return h


def _assert_same(a: Any, b: Any) -> None:
    assert list(a.counts) == list(b.counts)
    assert a.get_total_count() == b.get_total_count()
    assert a.get_min_value() == b.get_min_value()
    assert a.get_max_value() == b.get_max_value()
    percentiles = list(_CHECKED_PERCENTILES)
    assert a.get_percentile_to_value_dict(percentiles) == b.get_percentile_to_value_dict(
        percentiles
    )
    assert summarize(a) == summarize(b)


def _rec(
    *,
    due: int = 0,
    sent: int | None = None,
    end: int,
    tokens: tuple[int, ...] = (),
    output_tokens: int | None = None,
    counted_by: TokenSource = TokenSource.EVENTS,
    error: str | None = None,
    warmup: bool = False,
) -> RequestRecord:
    return RequestRecord(
        index=0,
        warmup=warmup,
        due_ns=due,
        sent_ns=due if sent is None else sent,
        end_ns=end,
        token_ns=tokens,
        output_tokens=len(tokens) if output_tokens is None else output_tokens,
        counted_by=counted_by,
        error=error,
    )


# --- the histogram wrapper ---------------------------------------------------------


def test_one_configuration_everywhere() -> None:
    h = new_histogram()
    assert (h.lowest_trackable_value, h.highest_trackable_value, h.significant_figures) == (
        LOWEST_US,
        HIGHEST_US,
        SIGNIFICANT_FIGURES,
    )


def test_zero_is_recordable() -> None:
    h = new_histogram()
    assert record(h, 0) is True
    assert (h.get_total_count(), h.get_min_value(), h.get_max_value()) == (1, 0, 0)


def test_values_above_the_range_are_clamped_and_reported() -> None:
    h = new_histogram()
    assert record(h, HIGHEST_US) is True
    assert record(h, HIGHEST_US + 1) is False
    assert record(h, 10**15) is False
    assert h.get_total_count() == 3
    assert h.get_count_at_value(HIGHEST_US) == 3


def test_negative_values_are_a_bug() -> None:
    with pytest.raises(ValueError, match="negative"):
        record(new_histogram(), -1)
    with pytest.raises(ValueError, match="negative"):
        record_many(new_histogram(), [5, -1])


def test_a_histogram_of_another_configuration_is_refused() -> None:
    small = HdrHistogram(1, 1000, 3)
    with pytest.raises(ValueError, match="configuration"):
        record(small, 10**6)


@_SLOW
@given(st.lists(st.one_of(_VALUE, st.integers(HIGHEST_US, 10**13)), max_size=60))
def test_record_many_is_record_in_bulk(values: list[int]) -> None:
    one_by_one = new_histogram()
    clamped = sum(not record(one_by_one, v) for v in values)
    bulk = new_histogram()
    assert record_many(bulk, values) == clamped
    _assert_same(bulk, one_by_one)


def test_summary_of_known_values() -> None:
    h = new_histogram()
    record_many(h, list(range(2, 2001, 2)))  # 2..2000 µs: below 2048, every value is exact
    assert summarize(h) == LatencySummary(
        count=1000, min=0.002, mean=1.001, p50=1.0, p90=1.8, p95=1.9, p99=1.98, max=2.0
    )
    assert percentile_ms(h, 50) == 1.0
    assert percentile_ms(h, 100) == 2.0
    assert percentile_ms(h, 0) == 0.002


def test_summary_of_an_empty_histogram_is_zeros() -> None:
    s = summarize(new_histogram())
    assert s == LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert s.to_dict() == {
        "count": 0,
        "min": 0.0,
        "mean": 0.0,
        "p50": 0.0,
        "p90": 0.0,
        "p95": 0.0,
        "p99": 0.0,
        "max": 0.0,
    }
    assert percentile_ms(new_histogram(), 99) == 0.0


@pytest.mark.parametrize("p", [-0.1, 100.1, float("nan")])
def test_percentiles_are_0_to_100(p: float) -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile_ms(new_histogram(), p)


@settings(deadline=None, max_examples=25)  # hdrh's own mean takes ~35 ms per call
@given(_VALUES.filter(bool))
def test_mean_is_hdrh_mean(values: list[int]) -> None:
    h = _histogram(values)
    assert summarize(h).mean == round(h.get_mean_value() / 1000, 3)


@_SLOW
@given(_VALUES)
def test_encode_decode_round_trip(values: list[int]) -> None:
    h = _histogram(values)
    blob = encode(h)
    assert isinstance(blob, str)
    _assert_same(decode(blob), h)


@_SLOW
@given(_VALUES, _VALUES)
def test_merge_is_the_histogram_of_all_values(a: list[int], b: list[int]) -> None:
    ha, hb = _histogram(a), _histogram(b)
    merged = merge([ha, hb])
    _assert_same(merged, _histogram(a + b))
    _assert_same(merged, merge([hb, ha]))
    _assert_same(ha, _histogram(a))  # inputs unchanged


@_SLOW
@given(_VALUES, _VALUES)
def test_merge_of_decoded_blobs(a: list[int], b: list[int]) -> None:
    merged = merge([decode(encode(_histogram(a))), decode(encode(_histogram(b)))])
    _assert_same(merged, _histogram(a + b))


def test_merge_keeps_the_minimum_next_to_empty_histograms() -> None:
    # hdrh's own add() reports an empty histogram's minimum as 0 and keeps it.
    h = _histogram([5000, 7000])
    merged = merge([new_histogram(), h, new_histogram()])
    assert merged.get_min_value() == h.get_min_value() == 5000
    assert merge([]).get_total_count() == 0


@pytest.mark.parametrize(
    "blob",
    ["", "garbage", "!!!!", "é", base64.b64encode(b"x" * 64).decode(), "HISTFAAAAB"],
)
def test_decode_rejects_garbage_with_value_error(blob: str) -> None:
    with pytest.raises(ValueError, match="not a loadbench histogram"):
        decode(blob)


def test_decode_rejects_another_configuration() -> None:
    other = HdrHistogram(1, 60_000_000, 2)
    other.record_value(123)
    with pytest.raises(ValueError, match="configuration"):
        decode(other.encode().decode())


@_SLOW
@given(_VALUES, st.data())
def test_decode_of_a_damaged_blob_never_raises_anything_else(
    values: list[int], data: st.DataObject
) -> None:
    blob = encode(_histogram(values))
    i = data.draw(st.integers(0, len(blob) - 1))
    damaged = blob[:i] + data.draw(st.text(max_size=4)) + blob[i + 1 :]
    # Either a histogram (base64 skips stray characters, so some damage goes unnoticed)
    # or our ValueError; never one of hdrh's own exceptions.
    with contextlib.suppress(ValueError):
        assert decode(damaged).get_total_count() >= 0


# --- the stage accumulator ---------------------------------------------------------


def test_one_request_gives_known_latencies() -> None:
    acc = StageAccumulator(open_loop=False)
    acc.add(_rec(end=160 * MS, tokens=(100 * MS, 120 * MS, 150 * MS)))
    fig = acc.finish()
    lat = fig.latency_ms
    assert lat["ttft"].count == 1
    assert lat["ttft"].p50 == pytest.approx(100.0, rel=1e-3)
    assert lat["e2e"].max == pytest.approx(160.0, rel=1e-3)
    assert lat["tpot"].p50 == pytest.approx(30.0, rel=1e-3)  # (160 - 100) / (3 - 1)
    assert lat["itl"].count == 2
    assert lat["itl"].min == pytest.approx(20.0, rel=1e-3)
    assert lat["itl"].max == pytest.approx(30.0, rel=1e-3)
    assert (fig.sent, fig.ok, fig.failed, fig.output_tokens, fig.counted_by) == (
        1,
        1,
        0,
        3,
        "events",
    )
    assert fig.duration_s == pytest.approx(0.16)
    assert fig.requests_per_s == pytest.approx(1 / 0.16)
    assert fig.output_tokens_per_s == pytest.approx(3 / 0.16)
    assert fig.clamped == 0


def test_microseconds_round_half_up() -> None:
    acc = StageAccumulator(open_loop=False)
    acc.add(_rec(end=1500, tokens=(1499,)))
    lat = acc.finish().latency_ms
    assert lat["ttft"].max == 0.001  # 1499 ns
    assert lat["e2e"].max == 0.002  # 1500 ns


def test_tpot_uses_the_reported_token_count() -> None:
    # The server said 11 tokens in 3 events: tpot = (end - first) / 10.
    acc = StageAccumulator(open_loop=False)
    acc.add(_rec(end=120 * MS, tokens=(20 * MS, 50 * MS, 80 * MS), output_tokens=11))
    assert acc.finish().latency_ms["tpot"].p50 == pytest.approx(10.0, rel=1e-3)


def test_one_token_has_no_tpot_or_itl_and_no_token_no_ttft() -> None:
    acc = StageAccumulator(open_loop=False)
    acc.add(_rec(end=50 * MS, tokens=(40 * MS,)))
    acc.add(_rec(end=60 * MS, tokens=(), output_tokens=0))
    lat = acc.finish().latency_ms
    assert (lat["e2e"].count, lat["ttft"].count, lat["itl"].count, lat["tpot"].count) == (
        2,
        1,
        0,
        0,
    )


def test_zero_gaps_are_recorded() -> None:
    acc = StageAccumulator(open_loop=False)
    acc.add(_rec(end=10 * MS, tokens=(5 * MS, 5 * MS, 5 * MS)))
    assert acc.finish().latency_ms["itl"] == LatencySummary(2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_failed_requests_count_but_have_no_latency() -> None:
    acc = StageAccumulator(open_loop=False)
    acc.add(_rec(due=0, end=10 * MS, tokens=(5 * MS,)))
    acc.add(_rec(due=1 * MS, end=3_000 * MS, error=ErrorKind.TIMEOUT))
    acc.add(_rec(due=2 * MS, end=4 * MS, error=http_error(503)))
    acc.add(_rec(due=3 * MS, end=5 * MS, error=http_error(503)))
    fig = acc.finish()
    assert (fig.sent, fig.ok, fig.failed) == (4, 1, 3)
    assert fig.errors == {"http_503": 2, "timeout": 1}
    assert all(type(k) is str for k in fig.errors)
    assert all(s.count == (1 if k in ("e2e", "ttft") else 0) for k, s in fig.latency_ms.items())
    assert fig.duration_s == pytest.approx(3.0)  # failed requests still bound the window
    assert fig.requests_per_s == pytest.approx(1 / 3.0)
    assert (acc.done, acc.failed) == (4, 3)


def test_warmup_is_counted_apart_and_measures_nothing() -> None:
    acc = StageAccumulator(open_loop=True)
    acc.add(_rec(due=0, end=900 * MS, tokens=(100 * MS,), warmup=True))
    acc.add(_rec(due=0, end=900 * MS, error=ErrorKind.CONNECT, warmup=True))
    acc.add(_rec(due=1000 * MS, end=1100 * MS, tokens=(1050 * MS,)))
    fig = acc.finish()
    assert (fig.warmup, fig.sent, fig.ok, fig.failed, fig.errors) == (2, 1, 1, 0, {})
    assert fig.duration_s == pytest.approx(0.1)
    assert fig.latency_ms["e2e"].count == 1
    assert acc.warmup_done == 2


def test_nothing_measured() -> None:
    for open_loop in (True, False):
        fig = StageAccumulator(open_loop=open_loop).finish()
        assert (fig.sent, fig.duration_s, fig.requests_per_s, fig.output_tokens_per_s) == (
            0,
            0.0,
            0.0,
            0.0,
        )
        assert fig.counted_by == "events"
        assert all(s.count == 0 for s in fig.latency_ms.values())


def test_metric_keys_by_mode() -> None:
    closed = StageAccumulator(open_loop=False).finish()
    opened = StageAccumulator(open_loop=True).finish()
    assert list(closed.latency_ms) == [m.value for m in CLOSED_LOOP_METRICS]
    assert list(closed.histograms) == list(closed.latency_ms)
    assert list(opened.latency_ms) == [m.value for m in OPEN_LOOP_METRICS]
    assert set(opened.histograms) == {m.value for m in OPEN_LOOP_METRICS}  # no server timings


def test_open_loop_counts_from_due_and_keeps_raw_figures() -> None:
    acc = StageAccumulator(open_loop=True)
    acc.add(_rec(due=0, sent=40 * MS, end=200 * MS, tokens=(100 * MS, 150 * MS)))
    lat = acc.finish().latency_ms
    assert lat["schedule_lag"].max == pytest.approx(40.0, rel=1e-3)
    assert lat["ttft"].max == pytest.approx(100.0, rel=1e-3)
    assert lat["ttft_raw"].max == pytest.approx(60.0, rel=1e-3)
    assert lat["e2e"].max == pytest.approx(200.0, rel=1e-3)
    assert lat["e2e_raw"].max == pytest.approx(160.0, rel=1e-3)


def test_a_request_sent_before_its_due_time_counts_from_its_send() -> None:
    acc = StageAccumulator(open_loop=True)
    acc.add(_rec(due=10_000, sent=7_000, end=1 * MS, tokens=(500_000,)))
    lat = acc.finish().latency_ms
    assert lat["schedule_lag"] == LatencySummary(1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert lat["ttft"].max == lat["ttft_raw"].max == pytest.approx(0.493, rel=1e-3)


def test_stamps_out_of_order_are_a_bug() -> None:
    acc = StageAccumulator(open_loop=False)
    with pytest.raises(ValueError, match="negative"):
        acc.add(_rec(due=0, end=5 * MS, tokens=(6 * MS, 4 * MS)))


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ([TokenSource.USAGE, TokenSource.USAGE], "usage"),
        ([TokenSource.EVENTS], "events"),
        ([TokenSource.USAGE, TokenSource.EVENTS], "mixed"),
    ],
)
def test_counted_by(sources: list[TokenSource], expected: str) -> None:
    acc = StageAccumulator(open_loop=False)
    for source in sources:
        acc.add(_rec(end=MS, tokens=(MS // 2,), counted_by=source))
    # A failed record's source does not count.
    acc.add(_rec(end=MS, error=ErrorKind.DROPPED, counted_by=TokenSource.EVENTS))
    assert acc.finish().counted_by == expected


def test_output_tokens_sum_ok_records_only() -> None:
    acc = StageAccumulator(open_loop=False)
    acc.add(_rec(end=MS, tokens=(1, 2), output_tokens=7, counted_by=TokenSource.USAGE))
    acc.add(_rec(end=MS, tokens=(1, 2), output_tokens=5, error=ErrorKind.INCOMPLETE))
    acc.add(_rec(end=MS, tokens=(1, 2), output_tokens=3, warmup=True))
    assert acc.finish().output_tokens == 7


def test_values_over_an_hour_are_clamped_and_counted() -> None:
    acc = StageAccumulator(open_loop=True)
    hours = 3_600_000 * MS
    acc.add(_rec(due=0, end=2 * hours, tokens=(1 * MS, 2 * hours - 1)))
    fig = acc.finish()
    # e2e, e2e_raw, itl and tpot exceed an hour; ttft, ttft_raw and schedule lag do not.
    assert fig.clamped == 4
    assert fig.latency_ms["e2e"].max == pytest.approx(HIGHEST_US / 1000, rel=1e-3)


def test_live_figures() -> None:
    acc = StageAccumulator(open_loop=False)
    assert acc.live_ttft_p50_ms() == 0.0
    for ttft in (10, 20, 30):
        acc.add(_rec(end=100 * MS, tokens=(ttft * MS,)))
    acc.add(_rec(end=MS, error=ErrorKind.CONNECT))
    assert acc.live_ttft_p50_ms() == pytest.approx(20.0, rel=1e-3)
    assert (acc.done, acc.sent, acc.ok, acc.failed) == (4, 4, 3, 1)
    acc.add(_rec(end=100 * MS, tokens=(90 * MS,)))
    acc.add(_rec(end=100 * MS, tokens=(95 * MS,)))
    assert acc.live_ttft_p50_ms() == pytest.approx(30.0, rel=1e-3)


def test_finish_is_a_snapshot() -> None:
    acc = StageAccumulator(open_loop=False)
    acc.add(_rec(end=10 * MS, tokens=(5 * MS,)))
    first = acc.finish()
    acc.add(_rec(end=20 * MS, tokens=(5 * MS,)))
    assert first.histograms["e2e"].get_total_count() == 1
    assert acc.finish().histograms["e2e"].get_total_count() == 2
    assert decode(encode(first.histograms["e2e"])).get_total_count() == 1
