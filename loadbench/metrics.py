"""HDR histograms of latencies, and the per-stage accumulator that fills them.

Every histogram in loadbench has one configuration (integer microseconds, 1 µs to 1 h,
3 significant figures), so any two merge losslessly: per stage, per run, across result
files. Histograms hold microseconds; summaries and reports show milliseconds.

The ``hdrh`` package is wrapped here once, for its quirks: ``record_value`` returns False
instead of raising when a value does not fit; ``add`` of an empty histogram sets the
minimum to 0; ``get_mean_value`` walks an iterator object per bucket (~35 ms); its
``decode`` raises half a dozen unrelated exception types on bad input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise

from hdrh.codec import HdrHistogramEncoder
from hdrh.histogram import HdrHistogram

from loadbench.records import RequestRecord, TokenSource

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_FIGURES = 3

_PERCENTILES = (50.0, 90.0, 95.0, 99.0)


class Metric(StrEnum):
    """Latency metrics, all from the request's due time unless marked raw.
    ``ttft``: first content token; ``itl``: every gap between consecutive content tokens;
    ``tpot``: (last byte - first token) / (output tokens - 1), one value per request;
    ``e2e``: last byte. Open loop only: ``ttft_raw`` and ``e2e_raw`` count from the send
    instead of the due time, and ``schedule_lag`` is send - due.
    """

    TTFT = "ttft"
    ITL = "itl"
    TPOT = "tpot"
    E2E = "e2e"
    TTFT_RAW = "ttft_raw"
    E2E_RAW = "e2e_raw"
    SCHEDULE_LAG = "schedule_lag"
    # Server-native, when the server reports them per response (llama.cpp's `timings`):
    SERVER_PREFILL = "server_prefill"  # the server's own prompt-processing time
    SERVER_DECODE = "server_decode"  # the server's own generation time
    TTFT_OUTSIDE_PREFILL = "ttft_outside_prefill"  # ttft - server prefill: queue, network, us
    CONNECT = "connect"  # TCP + TLS set-up paid by a measured request (ok or not), not in TTFT


CLOSED_LOOP_METRICS = (Metric.TTFT, Metric.ITL, Metric.TPOT, Metric.E2E)
SERVER_METRICS = (Metric.SERVER_PREFILL, Metric.SERVER_DECODE, Metric.TTFT_OUTSIDE_PREFILL)
OPEN_LOOP_METRICS = (*CLOSED_LOOP_METRICS, Metric.TTFT_RAW, Metric.E2E_RAW, Metric.SCHEDULE_LAG)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)


def record(h: HdrHistogram, value_us: int) -> bool:
    """Record one value; False when it was above ``HIGHEST_US`` and clamped to it. 0 is
    recordable (events in one read); a negative duration is a bug, not data: ValueError."""
    if value_us < 0:
        raise ValueError(f"negative duration: {value_us} µs")
    fits = value_us <= HIGHEST_US
    if not h.record_value(value_us if fits else HIGHEST_US):
        raise ValueError("histogram does not have loadbench's configuration")
    return fits


def record_many(h: HdrHistogram, values_us: Sequence[int]) -> int:
    """:func:`record` for many (inter-token gaps: hundreds per request), ~4x faster: the
    bucket index inline (``hdrh``'s ``_counts_index_for``); returns how many were clamped."""
    if not values_us:
        return 0
    lowest, highest = min(values_us), max(values_us)
    if lowest < 0:
        raise ValueError(f"negative duration: {lowest} µs")
    clamped = 0
    if highest > HIGHEST_US:
        clamped = sum(1 for v in values_us if v > HIGHEST_US)
        values_us = [min(v, HIGHEST_US) for v in values_us]
        lowest, highest = min(lowest, HIGHEST_US), HIGHEST_US
    counts = h.counts
    mask: int = h.sub_bucket_mask
    unit: int = h.unit_magnitude
    half_mag: int = h.sub_bucket_half_count_magnitude
    half: int = h.sub_bucket_half_count
    base = unit + half_mag + 1
    for v in values_us:
        bucket = (v | mask).bit_length() - base
        counts[((bucket + 1) << half_mag) + (v >> (bucket + unit)) - half] += 1
    h.total_count += len(values_us)
    h.min_value = min(h.min_value, lowest)
    h.max_value = max(h.max_value, highest)
    return clamped


def encode(h: HdrHistogram) -> str:
    """The compressed, base64 V2 form that result files carry."""
    return str(h.encode().decode("ascii"))


def decode(blob: str) -> HdrHistogram:
    """Read back :func:`encode`'s output; ValueError with a short reason on anything else.
    The configuration is checked first: a foreign blob cannot ask for a huge array."""
    try:
        payload = HdrHistogramEncoder.decode(blob)
        p = payload.payload
        found = (p.lowest_trackable_value, p.highest_trackable_value, p.significant_figures)
        expected = (LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
        if found != expected:
            raise ValueError(
                f"histogram configuration (lowest, highest, significant figures) is "
                f"{found}, expected {expected}"
            )
        h = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES, hdr_payload=payload)
    except ValueError as exc:
        raise ValueError(f"not a loadbench histogram: {exc}") from exc
    except Exception as exc:  # hdrh raises zlib, ctypes, cookie and length errors alike
        reason = str(exc) or type(exc).__name__
        raise ValueError(f"not a loadbench histogram: {reason}") from exc
    return h


def merge(hs: Iterable[HdrHistogram]) -> HdrHistogram:
    """A new histogram holding the sum of all counts; the inputs are left unchanged."""
    out = new_histogram()
    for h in hs:
        if h.total_count:  # hdrh's add() takes an empty histogram's minimum as 0 and keeps it
            out.add(h)
    return out


@dataclass(frozen=True)
class LatencySummary:
    """One metric of one stage, in ms rounded to the µs; all 0 when empty. HDR bucket values,
    within 0.1 % of the recorded ones: ``max`` and percentiles the top of their bucket,
    ``min`` the bottom, ``mean`` bucket midpoints."""

    count: int
    min: float
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def _ms(value_us: float) -> float:
    return round(value_us / 1000, 3)


def summarize(h: HdrHistogram) -> LatencySummary:
    count: int = h.total_count
    if not count:
        return LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    at: dict[float, int] = h.get_percentile_to_value_dict(list(_PERCENTILES))
    return LatencySummary(
        count=count,
        min=_ms(h.get_min_value()),
        mean=_ms(_mean_us(h)),
        p50=_ms(at[50.0]),
        p90=_ms(at[90.0]),
        p95=_ms(at[95.0]),
        p99=_ms(at[99.0]),
        max=_ms(h.get_max_value()),
    )


def _mean_us(h: HdrHistogram) -> float:
    """``hdrh``'s mean (bucket midpoints), its index-to-value arithmetic inline (its method
    calls cost ~30 ms per histogram): index ``i`` covers ``1 << (unit + bucket)`` values."""
    half_mag: int = h.sub_bucket_half_count_magnitude
    half: int = h.sub_bucket_half_count
    unit: int = h.unit_magnitude
    total = 0
    for index, n in enumerate(h.counts[:]):
        if n:
            bucket = (index >> half_mag) - 1
            sub = (index & (half - 1)) + half
            if bucket < 0:
                bucket, sub = 0, sub - half
            shift = bucket + unit
            total += n * ((sub << shift) + ((1 << shift) >> 1))
    return float(total / h.total_count)


def percentile_ms(h: HdrHistogram, p: float) -> float:
    """The value at percentile ``p`` (0-100) in milliseconds; 0.0 for an empty histogram."""
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    if not h.total_count:
        return 0.0
    value_us: int = h.get_value_at_percentile(p)
    return _ms(value_us)


def _us(ns: int) -> int:
    return (ns + 500) // 1000


@dataclass(frozen=True)
class StageFigures:
    """What one stage measured: counts, throughput over the measured window, latencies.
    ``latency_ms`` and ``histograms``: each metric of the stage's mode, even when empty.
    Failed requests count in ``sent``, ``failed`` and ``errors`` but not in latencies."""

    sent: int
    ok: int
    failed: int
    errors: dict[str, int]
    warmup: int
    duration_s: float  # measured window; 0.0 when nothing was measured
    requests_per_s: float  # ok requests / window
    output_tokens_per_s: float  # ok requests' output tokens / window
    output_tokens: int
    counted_by: str  # "usage", "events" or "mixed"
    latency_ms: dict[str, LatencySummary]
    histograms: dict[str, HdrHistogram]
    clamped: int  # values above HIGHEST_US, recorded as HIGHEST_US
    achieved_concurrency: float = 0.0  # mean measured requests in flight over the window
    good: int | None = None  # ok requests within every per-request SLO limit; None: no SLO
    goodput_rps: float | None = None  # good / window
    # Connections opened before the window, and by measured requests (None: not reported).
    preopened: int | None = None
    opened: int | None = None
    # For results.delivery (see StageAccumulator); None: not folded.
    ttft_fresh: HdrHistogram | None = None
    ttft_reused: HdrHistogram | None = None
    long_streams: int = 0
    burst_streams: int = 0


# (metric, percentile, limit in µs): a request is "good" when each of its own values is
# within the limit; for ITL, the request's own gaps at that percentile (nearest rank).
SloLimit = tuple[str, float, int]


def _nearest_rank(sorted_values: Sequence[int], p: float) -> int:
    index = max(0, min(len(sorted_values) - 1, -(-len(sorted_values) * p // 100) - 1))
    return sorted_values[int(index)]


class StageAccumulator:
    """Folds one stage's records into counters and histograms, once per finished request.

    Warmup records only bump ``warmup_done`` (and the delivery fold). Measured records count
    in ``sent`` and ``ok`` or ``failed`` (``errors`` by kind); only ok ones reach histograms.
    The measured window runs from the earliest due to the latest end, failed ones included.

    A request sent a few µs before its due time (anyio's clock is tied to ``perf_counter_ns``
    once per stage) counts from its send, so schedule lag is never negative.
    """

    def __init__(
        self, *, open_loop: bool, slo: Sequence[SloLimit] = (), connects: bool = False
    ) -> None:
        self.open_loop = open_loop
        self.slo = tuple(slo)
        self.good = 0
        self.busy_ns = 0
        metrics = OPEN_LOOP_METRICS if open_loop else CLOSED_LOOP_METRICS
        self.histograms: dict[str, HdrHistogram] = {m.value: new_histogram() for m in metrics}
        self.connects = connects
        self.preopened = 0  # set by the engine before the measured window
        self._connect = new_histogram()
        if connects:
            self.histograms[Metric.CONNECT.value] = self._connect
        self.warmup_done = 0
        self.sent = 0
        self.ok = 0
        self.failed = 0
        self.errors: dict[str, int] = {}
        self.output_tokens = 0
        self.clamped = 0
        self._ok_by_usage = 0
        self._first_due_ns: int | None = None
        self._last_end_ns: int | None = None
        self._ttft = self.histograms[Metric.TTFT.value]
        self._itl = self.histograms[Metric.ITL.value]
        self._tpot = self.histograms[Metric.TPOT.value]
        self._e2e = self.histograms[Metric.E2E.value]
        self._live_p50: tuple[int, float] = (0, 0.0)
        self._fresh = False  # set by add_connect for the request about to be added
        self._by_connection = (new_histogram(), new_histogram())  # TTFT µs: fresh, reused
        self._long = self._bursts = 0  # ok measured 4+ events; E2E-TTFT < max(1 ms, 5% E2E)

    @property
    def done(self) -> int:
        """Measured requests finished so far (warmup excluded), ok or failed."""
        return self.sent

    def add(self, rec: RequestRecord, fresh: bool | None = None) -> None:
        """``fresh``: whether it opened its connection, from an earlier ``opened()``."""
        if fresh is None:
            fresh = self.opened()
        if rec.error is None and rec.token_ns:  # one branch: the delivery fold
            first = rec.token_ns[0]
            record(self._by_connection[not fresh], _us(first - rec.sent_ns))
            if len(rec.token_ns) >= 4 and not rec.warmup:
                self._long += 1
                self._bursts += rec.end_ns - first < max(10**6, (rec.end_ns - rec.sent_ns) // 20)
        if rec.warmup:
            self.warmup_done += 1
            return
        self.sent += 1
        due = min(rec.due_ns, rec.sent_ns)
        if self._first_due_ns is None or due < self._first_due_ns:
            self._first_due_ns = due
        if self._last_end_ns is None or rec.end_ns > self._last_end_ns:
            self._last_end_ns = rec.end_ns
        self.busy_ns += max(rec.end_ns - rec.sent_ns, 0)
        if rec.error is not None:
            self.failed += 1
            error = str(rec.error)
            self.errors[error] = self.errors.get(error, 0) + 1
            return
        self.ok += 1
        self.output_tokens += rec.output_tokens
        if rec.counted_by is TokenSource.USAGE:
            self._ok_by_usage += 1
        clamped = 0
        clamped += not record(self._e2e, _us(rec.end_ns - due))
        tokens = rec.token_ns
        if tokens:
            first = tokens[0]
            clamped += not record(self._ttft, _us(first - due))
            if len(tokens) > 1:
                gaps = [(b - a + 500) // 1000 for a, b in pairwise(tokens)]
                clamped += record_many(self._itl, gaps)
            if rec.output_tokens > 1:
                per_token = (rec.output_tokens - 1) * 1000
                tpot_us = (rec.end_ns - first + per_token // 2) // per_token
                clamped += not record(self._tpot, tpot_us)
        if rec.server_prefill_us is not None or rec.server_decode_us is not None:
            clamped += self._server_split(rec, due)
        if self.slo and self._meets_slo(rec, due):
            self.good += 1
        if self.open_loop:
            hs = self.histograms
            if tokens:
                clamped += not record(hs[Metric.TTFT_RAW.value], _us(tokens[0] - rec.sent_ns))
            clamped += not record(hs[Metric.E2E_RAW.value], _us(rec.end_ns - rec.sent_ns))
            clamped += not record(hs[Metric.SCHEDULE_LAG.value], _us(rec.sent_ns - due))
        self.clamped += clamped

    def _server_split(self, rec: RequestRecord, due: int) -> int:
        """Client-observed TTFT = server prefill + the rest (queueing, network, harness)."""
        hs = self.histograms
        for metric in SERVER_METRICS:
            if metric.value not in hs:
                hs[metric.value] = new_histogram()
        clamped = 0
        if rec.server_prefill_us is not None:
            clamped += not record(hs[Metric.SERVER_PREFILL.value], rec.server_prefill_us)
            if rec.token_ns:
                rest = _us(rec.token_ns[0] - due) - rec.server_prefill_us
                clamped += not record(hs[Metric.TTFT_OUTSIDE_PREFILL.value], max(rest, 0))
        if rec.server_decode_us is not None:
            clamped += not record(hs[Metric.SERVER_DECODE.value], rec.server_decode_us)
        return clamped

    def _meets_slo(self, rec: RequestRecord, due: int) -> bool:
        tokens = rec.token_ns
        for metric, p, limit_us in self.slo:
            if metric == "e2e":
                value = _us(rec.end_ns - due)
            elif not tokens:
                return False  # no first token: no TTFT, ITL or TPOT to be within a limit
            elif metric == "ttft":
                value = _us(tokens[0] - due)
            elif metric == "tpot":
                if rec.output_tokens < 2:
                    continue
                value = _us((rec.end_ns - tokens[0]) // (rec.output_tokens - 1))
            elif metric == "itl":
                if len(tokens) < 2:
                    continue
                value = _us(_nearest_rank(sorted(b - a for a, b in pairwise(tokens)), p))
            else:
                continue
            if value > limit_us:
                return False
        return True

    def add_connect(self, connect_ns: int, warmup: bool) -> None:
        """The request about to be added is its connection's first: it opened it (a measured
        one's connect is counted), or ``connect_ns`` < 0: it was opened before the stage."""
        self._fresh = True
        if not warmup and connect_ns >= 0:
            self.clamped += not record(self._connect, _us(connect_ns))

    def opened(self) -> bool:
        """Whether the request about to be added opened its connection; clears the flag."""
        fresh, self._fresh = self._fresh, False
        return fresh

    def live_ttft_p50_ms(self) -> float:
        """Median TTFT so far, for a progress display; recomputed only after new records."""
        count: int = self._ttft.total_count
        if count != self._live_p50[0]:
            self._live_p50 = (count, percentile_ms(self._ttft, 50.0))
        return self._live_p50[1]

    def _counted_by(self) -> str:
        """Where ok records' token counts came from: all usage, all events, or mixed."""
        if self._ok_by_usage == 0:
            return TokenSource.EVENTS.value  # also with no ok record at all
        if self._ok_by_usage == self.ok:
            return TokenSource.USAGE.value
        return "mixed"

    def finish(self) -> StageFigures:
        """A snapshot: the histograms are copies, so the accumulator may go on."""
        first, last = self._first_due_ns, self._last_end_ns
        duration_s = 0.0 if first is None or last is None else (last - first) / 1e9
        histograms = {name: merge([h]) for name, h in self.histograms.items()}
        return StageFigures(
            sent=self.sent,
            ok=self.ok,
            failed=self.failed,
            errors=dict(sorted(self.errors.items())),
            warmup=self.warmup_done,
            duration_s=duration_s,
            requests_per_s=self.ok / duration_s if duration_s > 0 else 0.0,
            output_tokens_per_s=self.output_tokens / duration_s if duration_s > 0 else 0.0,
            output_tokens=self.output_tokens,
            counted_by=self._counted_by(),
            latency_ms={name: summarize(h) for name, h in histograms.items()},
            histograms=histograms,
            clamped=self.clamped,
            achieved_concurrency=self.busy_ns / 1e9 / duration_s if duration_s > 0 else 0.0,
            good=self.good if self.slo else None,
            goodput_rps=(self.good / duration_s if duration_s > 0 else 0.0) if self.slo else None,
            preopened=self.preopened if self.connects else None,
            opened=self._connect.total_count if self.connects else None,
            ttft_fresh=merge([self._by_connection[0]]),
            ttft_reused=merge([self._by_connection[1]]),
            long_streams=self._long,
            burst_streams=self._bursts,
        )
