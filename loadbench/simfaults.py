"""The simulator's configuration, and what it answers to one completion request.

The pure half of the simulator (``simserver`` holds the sockets and the clock): the
``SimConfig`` and its validation, parsing a request body, drawing its fault, and building
every byte it will be sent, so the per-token work in the server is one list lookup and one
write. The fault draw is a function of a
seeded ``random.Random`` and the rates only: with a seed, the n-th completion request always
gets the same fault, whatever the timing of the run.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum

import orjson

MODEL_ID = "sim-model"
WORDS = ("the", "model", "streams", "tokens", "while", "bench", "measures", "latency")
_WORDS_JSON = tuple(orjson.dumps(w + " ") for w in WORDS)


class Fault(StrEnum):
    NONE = "none"
    HTTP_500 = "http_500"
    HTTP_429 = "http_429"
    DROP = "drop"
    MALFORMED = "malformed"
    STALL = "stall"


class Outcome(StrEnum):
    """How a request ended, as counted by ``GET /stats``; fault names are reused."""

    OK = "ok"
    HTTP_500 = "http_500"
    HTTP_429 = "http_429"
    DROP = "drop"
    MALFORMED = "malformed"
    STALL = "stall"
    BAD_REQUEST = "bad_request"
    CLIENT_DISCONNECT = "client_disconnect"


@dataclass(frozen=True)
class SimConfig:
    """The simulated model's timing and faults; ``simserver`` re-exports it."""

    ttft_ms: float = 80.0  # prefill time once a slot is free
    itl_ms: float = 15.0  # inter-token gap at batch size 1
    jitter: float = 0.0  # relative std-dev of the TTFT and every gap (0.1 = 10%), floored at 0
    slots: int = 8  # requests decoding together; the rest wait FIFO
    batch_itl_factor: float = 0.08  # gap = itl_ms * (1 + factor * (active - 1)), per token
    max_tokens_default: int = 128  # when a request gives no max_tokens
    seed: int | None = None  # faults and jitter; None draws fresh each run
    error_rate: float = 0.0  # answered 500 with an OpenAI error body
    rate_limit_rate: float = 0.0  # answered 429 with Retry-After: 1
    drop_rate: float = 0.0  # connection closed after >= 1 token, no [DONE]
    malformed_rate: float = 0.0  # one event of invalid JSON after the first token
    stall_rate: float = 0.0  # silent for stall_s after the first token
    stall_s: float = 30.0

    @property
    def fault_rates(self) -> tuple[float, ...]:
        """In ``FAULT_ORDER``."""
        return (
            self.error_rate,
            self.rate_limit_rate,
            self.drop_rate,
            self.malformed_rate,
            self.stall_rate,
        )

    def validate(self) -> list[str]:
        """Every problem at once, one message per field, written for a command-line user."""
        problems: list[str] = []

        def number(name: str, low: float, high: float | None = None) -> None:
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and value >= low and (high is None or value <= high)
            if not ok:
                want = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
                problems.append(f"{name}: expected a number {want}, got {value!r}")

        def integer(name: str, low: int) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                problems.append(f"{name}: expected an integer >= {low}, got {value!r}")

        for name in ("ttft_ms", "itl_ms", "jitter", "batch_itl_factor", "stall_s"):
            number(name, 0.0)
        integer("slots", 1)
        integer("max_tokens_default", 1)
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool)
        ):
            problems.append(f"seed: expected an integer or nothing, got {self.seed!r}")
        rate_names = ("error_rate", "rate_limit_rate", "drop_rate", "malformed_rate", "stall_rate")
        before = len(problems)
        for name in rate_names:
            number(name, 0.0, 1.0)
        if len(problems) == before:  # the sum only means something when each rate does
            total = sum(self.fault_rates)
            if total > 1.0 + 1e-9:
                problems.append(
                    f"fault rates: expected {' + '.join(rate_names)} <= 1, got {total:g}"
                )
        return problems


# The order of the cumulative draw; keep it stable or seeded runs change meaning.
FAULT_ORDER = (Fault.HTTP_500, Fault.HTTP_429, Fault.DROP, Fault.MALFORMED, Fault.STALL)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    fault: Fault
    drop_after: int  # tokens sent before a DROP closes the connection; 0 for other faults


NO_FAULT = FaultPlan(Fault.NONE, 0)


def draw_fault(rng: random.Random, config: SimConfig, max_tokens: int) -> FaultPlan:
    """One fault at most per request: a single uniform draw against the cumulative rates.

    A DROP happens after a uniform number of tokens in [1, max_tokens - 1], so at least
    one token arrives and the stream never looks complete; with ``max_tokens == 1`` it
    comes after that one token, before ``[DONE]``.
    """
    rates = config.fault_rates
    if not any(rates):
        return NO_FAULT  # no draw at all, so the common case costs nothing
    u = rng.random()
    edge = 0.0
    for fault, rate in zip(FAULT_ORDER, rates, strict=True):
        edge += rate
        if u < edge:
            if fault is not Fault.DROP:
                return FaultPlan(fault, 0)
            return FaultPlan(fault, rng.randint(1, max_tokens - 1) if max_tokens > 1 else 1)
    return NO_FAULT


class BadRequest(Exception):
    """A request the server refuses with ``status`` and an ``invalid_request_error`` body."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Completion:
    """A parsed completion request: what to generate and how to frame it."""

    chat: bool
    model: str
    max_tokens: int
    prompt_tokens: int
    stream: bool
    include_usage: bool


def count_words(value: object) -> int:
    """Prompt tokens as the simulator defines them: whitespace-separated words.

    Handles a string, a list of strings, token ids (each counts 1) and chat content parts
    (``{"type": "text", "text": ...}``); anything else counts 0.
    """
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(1 if isinstance(v, int) else count_words(v) for v in value)
    if isinstance(value, dict):
        return count_words(value.get("text", value.get("content", "")))
    return 0


def parse_completion(body: bytes, *, chat: bool, default_max_tokens: int) -> Completion:
    """Raises BadRequest with a message an OpenAI client would show its user."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    field = "messages" if chat else "prompt"
    if field not in data:
        raise BadRequest(f"missing required field '{field}'")
    source = data[field]
    if chat and not (isinstance(source, list) and source):
        raise BadRequest("'messages' must be a non-empty list")
    if not chat and not isinstance(source, str | list):
        raise BadRequest("'prompt' must be a string or a list")
    if chat:
        prompt_tokens = sum(count_words(m.get("content")) for m in source if isinstance(m, dict))
    else:
        prompt_tokens = count_words(source)
    max_tokens = data.get("max_tokens", data.get("max_completion_tokens"))
    if max_tokens is None:
        max_tokens = default_max_tokens
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest(f"'max_tokens' must be an integer >= 1, got {max_tokens!r}")
    model = data.get("model", MODEL_ID)
    if not isinstance(model, str):
        raise BadRequest("'model' must be a string")
    options = data.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return Completion(
        chat, model, max_tokens, prompt_tokens, data.get("stream") is True, include_usage
    )


def usage(job: Completion) -> dict[str, int]:
    total = job.prompt_tokens + job.max_tokens
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": job.max_tokens,
        "total_tokens": total,
    }


def chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk; every SSE event travels as its own, like a real server's flush."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def error_body(message: str, error_type: str, code: str | int | None = None) -> bytes:
    """An OpenAI-style error object, the shape clients parse for a message."""
    error = {"message": message, "type": error_type, "param": None, "code": code}
    return orjson.dumps({"error": error})


HTTP_500_BODY = error_body("simulated internal server error", "server_error", 500)
HTTP_429_BODY = error_body(
    "simulated rate limit, retry after 1 s", "rate_limit_error", "rate_limit_exceeded"
)
# Truncated JSON, exactly what a broken proxy or a half-written buffer produces.
MALFORMED_CHUNK = chunk(b'data: {"choices": [\n\n')
DONE_AND_END = chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
_ROLE = b'[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'


@dataclass(frozen=True, slots=True)
class StreamFrames:
    """Every chunk of one streamed response, built before its first token is due."""

    role: bytes  # the chat role-only delta (empty for the completions API)
    tokens: tuple[bytes, ...]  # token k is tokens[k % len(tokens)], finish_reason null
    last: bytes  # the final token, finish_reason "length"
    tail: bytes  # the usage event if asked for, [DONE], and the terminating chunk


def stream_frames(job: Completion, ident: str, created: int) -> StreamFrames:
    kind = b"chat.completion.chunk" if job.chat else b"text_completion"
    envelope = b'data: {"id":%b,"object":"%b","created":%d,"model":%b,"choices":' % (
        orjson.dumps(ident),
        kind,
        created,
        orjson.dumps(job.model),
    )
    if job.chat:
        open_, close = b'[{"index":0,"delta":{"content":', b'},"finish_reason":%b}]}\n\n'
    else:
        open_, close = b'[{"index":0,"text":', b',"logprobs":null,"finish_reason":%b}]}\n\n'
    tokens = tuple(chunk(envelope + open_ + w + close % b"null") for w in _WORDS_JSON)
    last_word = _WORDS_JSON[(job.max_tokens - 1) % len(WORDS)]
    last = chunk(envelope + open_ + last_word + close % b'"length"')
    tail = DONE_AND_END
    if job.include_usage:
        tail = chunk(envelope + b'[],"usage":%b}\n\n' % orjson.dumps(usage(job))) + tail
    return StreamFrames(chunk(envelope + _ROLE) if job.chat else b"", tokens, last, tail)


def whole_body(job: Completion, ident: str, created: int) -> bytes:
    """The non-streaming answer: all ``max_tokens`` words at once, with usage."""
    text = "".join(WORDS[k % len(WORDS)] + " " for k in range(job.max_tokens))
    choice: dict[str, object] = {"index": 0}
    if job.chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice |= {"text": text, "logprobs": None}
    choice["finish_reason"] = "length"
    return orjson.dumps(
        {
            "id": ident,
            "object": "chat.completion" if job.chat else "text_completion",
            "created": created,
            "model": job.model,
            "choices": [choice],
            "usage": usage(job),
        }
    )
