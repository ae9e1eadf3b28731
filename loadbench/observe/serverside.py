"""What the server says about a stage, read beside what the client measured.

Three sources, all already in the result file; this module only reads them:

* per-response timings (llama.cpp's ``timings``): each request's TTFT splits into the
  server's prefill and the rest (queueing, network, harness), *before* percentiles are
  taken, so the p50 of the parts need not add up to the p50 of the whole;
* ``server_metrics`` from ``/metrics``: gauges' peaks (running, waiting, KV cache) and
  counters' changes (tokens, cache hits), named differently by each server;
* histogram ``_sum``/``_count`` changes, which give stage *means* of queue, prefill and
  decode time for servers that send no per-response timings (vLLM, SGLang).

Pure functions over the result document's dicts; the report formats what they return.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Past this share of TTFT p50 outside prefill, TTFT is mostly waiting rather than work.
DOMINANT_SHARE = 0.5
# ... and only when that wait grew with load (x the lowest load's): a remote server's
# network time can dominate at every load, which is no queue.
QUEUE_GROWTH = 2.0


# --- per-response timings: client TTFT = server prefill + the rest ----------------------


@dataclass(frozen=True)
class TtftSplit:
    """One stage's TTFT beside the server's prefill and decode, ms; None where not measured."""

    label: str
    ttft_p50_ms: float | None
    prefill_p50_ms: float | None
    outside_p50_ms: float | None
    ttft_p95_ms: float | None
    prefill_p95_ms: float | None
    outside_p95_ms: float | None
    decode_p50_ms: float | None

    @property
    def outside_share(self) -> float | None:
        """Outside-prefill p50 / TTFT p50 (0-1): a ratio of two percentiles, not a sum."""
        if self.outside_p50_ms is None or not self.ttft_p50_ms:
            return None
        return self.outside_p50_ms / self.ttft_p50_ms


def _stat(stage: Mapping[str, Any], metric: str, stat: str) -> float | None:
    found = (stage.get("latency_ms") or {}).get(metric)
    if not found or not found.get("count"):
        return None
    return float(found[stat])


def ttft_split(stage: Mapping[str, Any]) -> TtftSplit | None:
    """The stage's split, or None when no response carried the server's prefill time."""
    if _stat(stage, "server_prefill", "p50") is None:
        return None
    return TtftSplit(
        label=str(stage["label"]),
        ttft_p50_ms=_stat(stage, "ttft", "p50"),
        prefill_p50_ms=_stat(stage, "server_prefill", "p50"),
        outside_p50_ms=_stat(stage, "ttft_outside_prefill", "p50"),
        ttft_p95_ms=_stat(stage, "ttft", "p95"),
        prefill_p95_ms=_stat(stage, "server_prefill", "p95"),
        outside_p95_ms=_stat(stage, "ttft_outside_prefill", "p95"),
        decode_p50_ms=_stat(stage, "server_decode", "p50"),
    )


def _labels(labels: Sequence[str], every: Sequence[str]) -> str:
    """``from c=8`` when the stages are the last ones of the sweep, else ``at c=4, c=16``."""
    if len(labels) > 1 and list(labels) == list(every[-len(labels) :]):
        return f"from {labels[0]}"
    return "at " + ", ".join(labels)


def queue_reading(
    splits: Sequence[TtftSplit], waiting_peak: Mapping[str, float | None] | None = None
) -> str | None:
    """One line when waiting outside prefill dominates TTFT at some load; None otherwise.

    A stage counts when more than :data:`DOMINANT_SHARE` of its TTFT p50 is outside
    prefill *and* that part is :data:`QUEUE_GROWTH` times the lowest load's: time that grows
    with load while prefill does not is a queue for a slot. ``waiting_peak`` (label → the
    server's own queue-depth peak) adds the server's confirmation when it has one.
    """
    if not splits:
        return None
    base = splits[0].outside_p50_ms
    queued = [
        s
        for s in splits[1:]
        if (share := s.outside_share) is not None
        and share > DOMINANT_SHARE
        and s.outside_p50_ms is not None
        and base is not None
        and s.outside_p50_ms >= QUEUE_GROWTH * max(base, 1.0)
    ]
    if not queued:
        return None
    where = _labels([s.label for s in queued], [s.label for s in splits])
    shares = ", ".join(f"{s.outside_share:.0%}" for s in queued)
    text = (
        f"{where} most of TTFT p50 ({shares}) is spent waiting outside prefill: "
        "requests queue for a slot"
    )
    peaks = [p for s in queued if (p := (waiting_peak or {}).get(s.label))]
    if peaks:
        text += f"; the server reports up to {max(peaks):g} requests waiting at once"
    return text + "."


# --- /metrics: the figures that matter, by server kind ----------------------------------


@dataclass(frozen=True)
class ServerNames:
    """Where one server kind keeps each figure; None where it does not expose it."""

    kind: str
    prefix: str
    running: str
    waiting: str
    prompt_tokens: str
    generated_tokens: str
    cached_tokens: str | None = None  # a counter of prompt tokens served from the cache
    prompt_counts_cached: bool = True  # llama.cpp's prompt counter leaves cached ones out
    cache_queries: str | None = None  # vLLM: hit share = hits / queries (tokens)
    cache_hit_rate: str | None = None  # SGLang's gauge, read when no counter is there
    kv_cache: tuple[str, ...] = ()  # use 0-1, newer name first


LLAMACPP = ServerNames(
    kind="llama.cpp",
    prefix="llamacpp:",
    running="llamacpp:requests_processing",
    waiting="llamacpp:requests_deferred",
    prompt_tokens="llamacpp:prompt_tokens_total",
    generated_tokens="llamacpp:tokens_predicted_total",
    cached_tokens="llamacpp:prompt_tokens_cached_total",
    prompt_counts_cached=False,
    kv_cache=("llamacpp:kv_cache_usage_ratio",),
)
VLLM = ServerNames(
    kind="vLLM",
    prefix="vllm:",
    running="vllm:num_requests_running",
    waiting="vllm:num_requests_waiting",
    prompt_tokens="vllm:prompt_tokens_total",
    generated_tokens="vllm:generation_tokens_total",
    cached_tokens="vllm:prefix_cache_hits_total",
    cache_queries="vllm:prefix_cache_queries_total",
    kv_cache=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
)
SGLANG = ServerNames(
    kind="SGLang",
    prefix="sglang:",
    running="sglang:num_running_reqs",
    waiting="sglang:num_queue_reqs",
    prompt_tokens="sglang:prompt_tokens_total",
    generated_tokens="sglang:generation_tokens_total",
    cached_tokens="sglang:cached_tokens_total",
    cache_hit_rate="sglang:cache_hit_rate",
    kv_cache=("sglang:token_usage",),
)
SERVERS: tuple[ServerNames, ...] = (LLAMACPP, VLLM, SGLANG)


def _series(section: Mapping[str, Any], name: str) -> list[float]:
    """Every label set's value of ``name``: the bare key and each ``name{...}``."""
    return [
        float(v)
        for k, v in section.items()
        if (k == name or k.startswith(name + "{")) and isinstance(v, int | float)
    ]


def _summed(section: Mapping[str, Any], name: str | None) -> float | None:
    """Summed over label sets (vLLM labels each series with its model), None if absent."""
    values = _series(section, name) if name else []
    return sum(values) if values else None


def server_kind(metrics: Mapping[str, Any]) -> ServerNames | None:
    """The server whose families the stage's ``server_metrics`` hold, if one we know."""
    keys = [k for part in ("peak", "delta", "after") for k in metrics.get(part) or {}]
    return next((s for s in SERVERS if any(k.startswith(s.prefix) for k in keys)), None)


@dataclass(frozen=True)
class ServerFigures:
    """A stage's figures from ``/metrics``: peaks of gauges, changes of counters."""

    kind: str
    running_peak: float | None
    waiting_peak: float | None  # the queue depth
    prompt_tokens: float | None
    cached_tokens: float | None
    cache_hit_share: float | None  # 0-1 of prompt tokens
    generated_tokens: float | None
    kv_cache_peak: float | None  # 0-1


def _hit_share(
    names: ServerNames, delta: Mapping[str, Any], after: Mapping[str, Any]
) -> float | None:
    cached = _summed(delta, names.cached_tokens)
    if cached is None:  # no counter: the server's own hit-rate gauge, if it has one
        rates = _series(after, names.cache_hit_rate) if names.cache_hit_rate else []
        return max(rates) if rates else None
    if names.cache_queries is not None:
        whole = _summed(delta, names.cache_queries)
    else:
        whole = _summed(delta, names.prompt_tokens)
        if whole is not None and not names.prompt_counts_cached:
            whole += cached
    return cached / whole if whole else None


def server_figures(metrics: Mapping[str, Any] | None) -> ServerFigures | None:
    """The figures of a stage's ``server_metrics``; None without one or for other servers.

    Ratios (KV-cache use, SGLang's hit-rate gauge) take the highest label set, not the sum.
    """
    names = server_kind(metrics or {})
    if metrics is None or names is None:
        return None
    peak, delta = metrics.get("peak") or {}, metrics.get("delta") or {}
    kv = next((v for n in names.kv_cache if (v := _series(peak, n))), [])
    return ServerFigures(
        kind=names.kind,
        running_peak=_summed(peak, names.running),
        waiting_peak=_summed(peak, names.waiting),
        prompt_tokens=_summed(delta, names.prompt_tokens),
        cached_tokens=_summed(delta, names.cached_tokens),
        cache_hit_share=_hit_share(names, delta, metrics.get("after") or {}),
        generated_tokens=_summed(delta, names.generated_tokens),
        kv_cache_peak=max(kv) if kv else None,
    )


# --- /metrics histograms: stage means for servers without per-response timings ----------


@dataclass(frozen=True)
class MeanSplit:
    """Stage means from the server's histograms (Δsum / Δcount), seconds.

    ``requests`` is the Δcount they rest on: it includes warm-up requests and any other
    client's, so set it beside the stage's ok count before trusting the means.
    """

    kind: str
    requests: float
    queue_s: float | None
    prefill_s: float | None
    decode_s: float | None
    ttft_s: float | None  # the server's own TTFT, from its arrival to its first token
    note: str | None = None  # how a figure was derived, where the server does not time it

    def outside_ms(self, client_ttft_mean_ms: float | None) -> float | None:
        """Client TTFT mean less the server's (network, HTTP front end, harness), ms.

        Means add up where percentiles do not, so this is a fair difference; without the
        server's TTFT, queue + prefill stands in for it.
        """
        inside = self.ttft_s
        if inside is None and self.queue_s is not None and self.prefill_s is not None:
            inside = self.queue_s + self.prefill_s
        if client_ttft_mean_ms is None or inside is None:
            return None
        return client_ttft_mean_ms - inside * 1000


def histogram_mean(delta: Mapping[str, Any], family: str) -> tuple[float, float] | None:
    """(mean, count) of a histogram over the stage, label sets summed; None if unseen."""
    total, count = _summed(delta, family + "_sum"), _summed(delta, family + "_count")
    if total is None or not count:
        return None
    return total / count, count


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def vllm_split(metrics: Mapping[str, Any]) -> MeanSplit | None:
    """vLLM times each phase of a request: queue, prefill and decode histograms."""
    delta = metrics.get("delta") or {}
    found = {
        part: histogram_mean(delta, f"vllm:{name}")
        for part, name in (
            ("queue", "request_queue_time_seconds"),
            ("prefill", "request_prefill_time_seconds"),
            ("decode", "request_decode_time_seconds"),
            ("ttft", "time_to_first_token_seconds"),
        )
    }
    counts = [f[1] for f in found.values() if f is not None]
    if not counts:
        return None
    means = {part: f[0] if f else None for part, f in found.items()}
    return MeanSplit(
        kind="vLLM",
        requests=max(counts),
        queue_s=means["queue"],
        prefill_s=means["prefill"],
        decode_s=means["decode"],
        ttft_s=means["ttft"],
    )


def sglang_split(metrics: Mapping[str, Any]) -> MeanSplit | None:
    """SGLang times the queue, TTFT and the whole request; prefill and decode follow.

    Its TTFT runs from the request's arrival, so prefill = TTFT - queue (tokenizing
    included) and decode = end-to-end - TTFT.
    """
    delta = metrics.get("delta") or {}
    queue = histogram_mean(delta, "sglang:queue_time_seconds")
    ttft = histogram_mean(delta, "sglang:time_to_first_token_seconds")
    e2e = histogram_mean(delta, "sglang:e2e_request_latency_seconds")
    counts = [f[1] for f in (queue, ttft, e2e) if f is not None]
    if not counts:
        return None
    queue_s, ttft_s = (queue[0] if queue else None), (ttft[0] if ttft else None)
    return MeanSplit(
        kind="SGLang",
        requests=max(counts),
        queue_s=queue_s,
        prefill_s=_difference(ttft_s, queue_s),
        decode_s=_difference(e2e[0] if e2e else None, ttft_s),
        ttft_s=ttft_s,
        note="SGLang's prefill here is its TTFT less its queue time (tokenizing included), "
        "its decode the end-to-end time less its TTFT.",
    )


MeanSplitter = Callable[[Mapping[str, Any]], MeanSplit | None]
MEAN_SPLITS: tuple[MeanSplitter, ...] = (vllm_split, sglang_split)
"""One function per server kind; another kind is one more function here. llama.cpp has
no per-request histograms (its per-response timings give percentiles instead)."""


def mean_split(metrics: Mapping[str, Any] | None) -> MeanSplit | None:
    """The first server kind's split that finds its histograms in ``server_metrics``."""
    if not metrics:
        return None
    return next((s for f in MEAN_SPLITS if (s := f(metrics)) is not None), None)


# --- cold start ------------------------------------------------------------------------


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def cold_start_text(target: Mapping[str, Any] | None) -> str | None:
    """``cold start: ready 0.68 s, first token 0.93 s after launch``; None without one.

    ``target.cold_start`` is written when loadbench launched the server itself: seconds
    from launch until it answered ready and until its first token. Any field may be
    missing or null (a failed first request has no first token).
    """
    cold = (target or {}).get("cold_start")
    if not isinstance(cold, Mapping):
        return None
    ready, first = _seconds(cold.get("ready_s")), _seconds(cold.get("first_token_s"))
    parts = [f"ready {ready:.2f} s"] if ready is not None else []
    if first is not None:
        parts.append(f"first token {first:.2f} s")
    text = "cold start: " + (", ".join(parts) + " after launch" if parts else "not timed")
    ttft = _seconds(cold.get("first_request_ttft_s"))
    outcome = cold.get("first_request")
    if outcome not in (None, "ok"):
        text += f"; the first request failed ({outcome})"
    elif ttft is not None:
        text += f" (first request's TTFT {ttft:.2f} s)"
    return text
