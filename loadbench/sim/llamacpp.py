"""llama.cpp's dialect as the simulator speaks it: per-response ``timings`` and ``/metrics``.

Kept apart from ``simserver`` because these are llama-server's formats, key order and
metric names, not the simulated model: the model decides when tokens are due, and this
module says how llama.cpp would report it.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from loadbench.sim.faults import DONE_AND_END, Completion, StreamFrames, chunk

# (name, type, help) in llama-server's words. No ``n_decode_total``: the simulator has no
# batched decode step to count, as each request keeps its own token clock.
METRICS = (
    ("prompt_tokens_total", "counter", "Number of prompt tokens processed"),
    ("prompt_seconds_total", "counter", "Total time spent processing prompts"),
    ("tokens_predicted_total", "counter", "Number of generation tokens processed"),
    ("tokens_predicted_seconds_total", "counter", "Total time spent generating tokens"),
    ("requests_processing", "gauge", "Number of requests processing"),
    ("requests_deferred", "gauge", "Number of requests deferred"),
)
# Not llama-server's: the simulator's prefix cache, named where loadbench's scrape looks for
# it (``observe.serverside``); listed only when the cache is on. As with llama.cpp's own
# ``prompt_n``, ``prompt_tokens_total`` leaves the cached tokens out.
CACHED_METRIC = ("prompt_tokens_cached_total", "counter", "Number of prompt tokens from the cache")
PROMETHEUS = b"text/plain; version=0.0.4"


@dataclass(slots=True)
class Counters:
    """llama-server's ``/metrics`` counters: the sums of every ``timings`` object sent."""

    prompt_tokens: int = 0  # computed, without the cached ones
    prompt_seconds: float = 0.0
    tokens_predicted: int = 0
    tokens_predicted_seconds: float = 0.0
    prompt_tokens_cached: int = 0

    def timings(
        self, prompt_n: int, prompt_s: float, predicted_n: int, predicted_s: float, cache_n: int
    ) -> bytes:
        """One response's ``timings``, counted."""
        self.prompt_tokens += prompt_n
        self.prompt_seconds += prompt_s
        self.tokens_predicted += predicted_n
        self.tokens_predicted_seconds += predicted_s
        self.prompt_tokens_cached += cache_n
        return timings_json(prompt_n, prompt_s, predicted_n, predicted_s, cache_n)

    def text(self, processing: int, deferred: int, *, cached: bool) -> bytes:
        """Prometheus text exposition (0.0.4): the requests holding a slot and waiting for one."""
        metrics: tuple[tuple[str, str, str], ...] = METRICS
        values: tuple[float, ...] = (
            self.prompt_tokens,
            self.prompt_seconds,
            self.tokens_predicted,
            self.tokens_predicted_seconds,
            processing,
            deferred,
        )
        if cached:
            metrics, values = (*metrics, CACHED_METRIC), (*values, self.prompt_tokens_cached)
        lines = [
            f"# HELP llamacpp:{name} {text}\n# TYPE llamacpp:{name} {kind}\n"
            f"llamacpp:{name} {value!r}\n"
            for (name, kind, text), value in zip(metrics, values, strict=True)
        ]
        return "".join(lines).encode()


def _per(numerator: float, denominator: float) -> float | None:
    """llama.cpp divides regardless and its JSON writer turns inf and nan into null."""
    return round(numerator / denominator, 3) if denominator else None


def timings_json(
    prompt_n: int, prompt_s: float, predicted_n: int, predicted_s: float, cache_n: int = 0
) -> bytes:
    """llama.cpp's ``timings`` object (``result_timings::to_json``), its keys in its order.

    ``prompt_n`` counts the tokens computed, without the ``cache_n`` taken from the cache.
    """
    prompt_ms, predicted_ms = prompt_s * 1e3, predicted_s * 1e3
    return orjson.dumps(
        {
            "cache_n": cache_n,
            "prompt_n": prompt_n,
            "prompt_ms": round(prompt_ms, 3),
            "prompt_per_token_ms": _per(prompt_ms, prompt_n),
            "prompt_per_second": _per(1e3 * prompt_n, prompt_ms),
            "predicted_n": predicted_n,
            "predicted_ms": round(predicted_ms, 3),
            "predicted_per_token_ms": _per(predicted_ms, predicted_n),
            "predicted_per_second": _per(1e3 * predicted_n, predicted_ms),
        }
    )


def _stamped_event(event: bytes, timings: bytes) -> bytes:
    """A prebuilt one-event chunk (``data: {...}``) with ``"timings"`` as its last field."""
    payload = event[event.index(b"\r\n") + 2 : -2]  # the chunk's data, without its framing
    return chunk(payload[: -len(b"}\n\n")] + b',"timings":%b}\n\n' % timings)


def stamped_end(job: Completion, frames: StreamFrames, timings: bytes) -> tuple[bytes, bytes]:
    """The final token and the tail, with ``timings`` where llama.cpp puts them.

    That is the stream's last data event: the usage chunk when usage was asked for, else
    the chunk with the finish_reason.
    """
    if job.include_usage:
        usage_event = frames.tail[: -len(DONE_AND_END)]
        return frames.last, _stamped_event(usage_event, timings) + DONE_AND_END
    return _stamped_event(frames.last, timings), frames.tail
