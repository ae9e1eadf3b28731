"""The simulator's configuration, and what it answers to one completion request.

The pure half of the simulator (``simserver`` holds the sockets and the clock): the
``SimConfig`` and its validation, parsing a request body, drawing its fault, and building
every byte it will be sent, so the per-token work in the server is one list lookup and one
write. The fault draw is a function of a
seeded ``random.Random`` and the rates only: with a seed, the n-th completion request always
gets the same fault, whatever the timing of the run.

Two faults break an event's payload, at different layers. ``malformed`` breaks the SSE
framing: a JSON payload continued on a second line without its ``data:`` field name (a
pretty-printing server, a proxy that re-wraps lines). SSE reads that line as an unknown
field and drops it, so the event's data is a fragment. ``bad_json`` is a well-framed event
whose JSON is cut short (a half-written buffer). A stray line that SSE can read as a field,
such as ``dataa: ...`` or a bare word, is not a fault: the spec ignores it, and a client
that follows the spec does too.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum

import orjson

from loadbench.sim.prompts import count_words, prompt_words
from loadbench.sim.served import MODEL_ID, WORDS, SimModel, as_model, model_problems

_WORDS_JSON = tuple(orjson.dumps(w + " ") for w in WORDS)


class Fault(StrEnum):
    """One injected failure; its value names its counter in ``GET /stats``."""

    NONE = "none"
    HTTP_500 = "http_500"
    HTTP_429 = "http_429"
    DROP = "drop"
    MALFORMED = "malformed"
    STALL = "stall"
    HTTP_503 = "http_503"
    HTTP_401 = "http_401"
    RESET = "reset"
    SILENT = "silent"
    NOT_SSE = "not_sse"
    EMPTY = "empty"
    NO_DONE = "no_done"
    BAD_JSON = "bad_json"


class Outcome(StrEnum):
    """How a request ended, as counted by ``GET /stats``; fault names are reused."""

    OK = "ok"
    HTTP_500 = "http_500"
    HTTP_429 = "http_429"
    DROP = "drop"
    MALFORMED = "malformed"
    STALL = "stall"
    HTTP_503 = "http_503"
    HTTP_401 = "http_401"
    RESET = "reset"
    SILENT = "silent"
    NOT_SSE = "not_sse"
    EMPTY = "empty"
    NO_DONE = "no_done"
    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    CLIENT_DISCONNECT = "client_disconnect"


# Each fault and its rate field, in the order of the cumulative draw: append only, or seeded
# runs change meaning.
FAULT_RATES = (
    (Fault.HTTP_500, "error_rate"),
    (Fault.HTTP_429, "rate_limit_rate"),
    (Fault.DROP, "drop_rate"),
    (Fault.MALFORMED, "malformed_rate"),
    (Fault.STALL, "stall_rate"),
    (Fault.HTTP_503, "unavailable_rate"),
    (Fault.HTTP_401, "unauthorized_rate"),
    (Fault.RESET, "reset_rate"),
    (Fault.SILENT, "silent_rate"),
    (Fault.NOT_SSE, "not_sse_rate"),
    (Fault.EMPTY, "empty_rate"),
    (Fault.NO_DONE, "no_done_rate"),
    (Fault.BAD_JSON, "bad_json_rate"),
)
FAULT_ORDER = tuple(fault for fault, _ in FAULT_RATES)
RATE_FIELDS = tuple(name for _, name in FAULT_RATES)


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
    # Faults: each request gets at most one, drawn against these rates (sum <= 1).
    error_rate: float = 0.0  # answered 500 with an OpenAI error body
    rate_limit_rate: float = 0.0  # answered 429 with Retry-After: 1
    drop_rate: float = 0.0  # connection closed after >= 1 token, no [DONE]
    malformed_rate: float = 0.0  # one event with a broken SSE line after the first token
    stall_rate: float = 0.0  # silent for stall_s after the first token
    unavailable_rate: float = 0.0  # answered 503 with an OpenAI error body
    unauthorized_rate: float = 0.0  # answered 401, an invalid API key
    reset_rate: float = 0.0  # connection reset (RST) before any response byte
    silent_rate: float = 0.0  # response head sent, then silent for stall_s
    not_sse_rate: float = 0.0  # 200 with a small text/html page instead of a stream
    empty_rate: float = 0.0  # a finished stream without a single content token
    no_done_rate: float = 0.0  # every token, but no finish_reason and no [DONE]
    bad_json_rate: float = 0.0  # one event of truncated JSON after the first token
    stall_s: float = 30.0  # the length of a stall and of a silence
    # Workload realism, all off by default so that the timing above stays the whole truth:
    prefill_ms_per_token: float = 0.0  # added to the TTFT per prompt token not cached
    early_stop_rate: float = 0.0  # share of answers ending ("stop") before max_tokens
    prefix_cache: bool = False  # vLLM-style prefix caching: cached tokens skip prefill
    # Several models (``sim.served``): none given is one "sim-model" answering any name.
    models: tuple[SimModel, ...] = ()
    broken_models: tuple[str, ...] = ()  # listed, but every request gets HTTP 500

    def __post_init__(self) -> None:
        """Entries may be names or mappings (``dataclasses.asdict`` of the scenario's spec)."""
        if isinstance(self.models, list | tuple):
            object.__setattr__(self, "models", tuple(_loose_model(m) for m in self.models))
        if isinstance(self.broken_models, list):
            object.__setattr__(self, "broken_models", tuple(self.broken_models))

    @property
    def fault_rates(self) -> tuple[float, ...]:
        """In ``FAULT_ORDER``."""
        return tuple(getattr(self, name) for name in RATE_FIELDS)

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
        number("prefill_ms_per_token", 0.0)
        number("early_stop_rate", 0.0, 1.0)  # not a fault: outside their sum and their draw
        if not isinstance(self.prefix_cache, bool):
            problems.append(f"prefix_cache: expected true or false, got {self.prefix_cache!r}")
        integer("slots", 1)
        integer("max_tokens_default", 1)
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool)
        ):
            problems.append(f"seed: expected an integer or nothing, got {self.seed!r}")
        before = len(problems)
        for name in RATE_FIELDS:
            number(name, 0.0, 1.0)
        if len(problems) == before:  # the sum only means something when each rate does
            total = sum(self.fault_rates)
            if total > 1.0 + 1e-9:
                terms = (f"{n} {getattr(self, n):g}" for n in RATE_FIELDS if getattr(self, n))
                problems.append(
                    f"fault rates: expected a sum <= 1, got {total:g} ({' + '.join(terms)})"
                )
        if not isinstance(self.models, tuple) or not isinstance(self.broken_models, tuple):
            problems.append("models, broken_models: expected lists")
        else:
            problems += model_problems(self.models, self.broken_models)
        return problems


def _loose_model(entry: object) -> object:
    """A ``SimModel`` where the entry makes one; anything else is left for ``validate``."""
    try:
        return as_model(entry)
    except TypeError:
        return entry


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
    stop: bool = False  # the words end before max_tokens: finish_reason "stop", not "length"
    ignore_eos: bool = False  # asked for exactly max_tokens: no early stop
    words: tuple[str, ...] = ()  # the prompt's words, kept only for the prefix cache
    cached_tokens: int | None = None  # reported in usage when the prefix cache is on


def parse_completion(
    body: bytes, *, chat: bool, default_max_tokens: int, keep_words: bool = False
) -> Completion:
    """Raises BadRequest with a message an OpenAI client would show its user.

    A chat prompt's tokens are every message's words, summed (no template tokens), so a
    tokenizer's count of the contents joined by blank lines is ``usage.prompt_tokens``.
    """
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
    words: list[str] = []
    if keep_words:
        parts = [m.get("content") for m in source if isinstance(m, dict)] if chat else [source]
        words = [w for part in parts for w in prompt_words(part)]
        prompt_tokens = len(words)
    elif chat:
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
    stream, ignore_eos = data.get("stream") is True, data.get("ignore_eos") is True
    return Completion(
        chat, model, max_tokens, prompt_tokens, stream, include_usage, False, ignore_eos, (*words,)
    )


def usage(job: Completion, completion_tokens: int | None = None) -> dict[str, object]:
    """``completion_tokens`` defaults to ``max_tokens``: what the simulator generates
    (an early stop lowers ``max_tokens`` itself). Cached tokens as OpenAI and vLLM put them."""
    completion = job.max_tokens if completion_tokens is None else completion_tokens
    out: dict[str, object] = {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": job.prompt_tokens + completion,
    }
    if job.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": job.cached_tokens}
    return out


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
HTTP_503_BODY = error_body(
    "simulated overload, the server cannot take requests now", "server_error", 503
)
HTTP_401_BODY = error_body(
    "simulated authentication failure: invalid API key", "invalid_request_error", "invalid_api_key"
)
NOT_SSE_BODY = (
    b"<!doctype html>\n<html><head><title>Sign in</title></head>"
    b"<body><p>loadbench simulator: an HTML page, not an event stream</p></body></html>\n"
)
# A broken SSE line: the payload goes on without `data:`, so SSE keeps only its first line.
MALFORMED_CHUNK = chunk(b'data: {"choices": [{"index": 0,\n"delta": {"content": "x "}}]}\n\n')
# Well-framed, but the JSON lacks its closing brace, as a half-written buffer leaves it.
BAD_JSON_CHUNK = chunk(b'data: {"choices": [{"index": 0, "delta": {"content": "x "}}]\n\n')
END_OF_BODY = b"0\r\n\r\n"  # the terminating chunk
DONE_AND_END = chunk(b"data: [DONE]\n\n") + END_OF_BODY
_ROLE = b'[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'


@dataclass(frozen=True, slots=True)
class StreamFrames:
    """Every chunk of one streamed response, built before its first token is due."""

    role: bytes  # the chat role-only delta (empty for the completions API)
    tokens: tuple[bytes, ...]  # token k is tokens[k % len(tokens)], finish_reason null
    last: bytes  # the final token, finish_reason "length"
    tail: bytes  # the usage event if asked for, [DONE], and the terminating chunk
    ident: str  # the response's id and creation time, for an EMPTY fault's own tail
    created: int


def _envelope(job: Completion, ident: str, created: int) -> bytes:
    """An event's start, up to the value of ``choices``."""
    kind = b"chat.completion.chunk" if job.chat else b"text_completion"
    return b'data: {"id":%b,"object":"%b","created":%d,"model":%b,"choices":' % (
        orjson.dumps(ident),
        kind,
        created,
        orjson.dumps(job.model),
    )


def _usage_event(envelope: bytes, job: Completion, completion_tokens: int | None = None) -> bytes:
    return chunk(envelope + b'[],"usage":%b}\n\n' % orjson.dumps(usage(job, completion_tokens)))


def stream_frames(
    job: Completion, ident: str, created: int, words: tuple[bytes, ...] = _WORDS_JSON
) -> StreamFrames:
    """``words`` JSON-encoded, each with its trailing space; token k is ``words[k % len]``."""
    envelope = _envelope(job, ident, created)
    if job.chat:
        open_, close = b'[{"index":0,"delta":{"content":', b'},"finish_reason":%b}]}\n\n'
    else:
        open_, close = b'[{"index":0,"text":', b',"logprobs":null,"finish_reason":%b}]}\n\n'
    tokens = tuple(chunk(envelope + open_ + w + close % b"null") for w in words)
    last_word = words[(job.max_tokens - 1) % len(words)]
    last = chunk(envelope + open_ + last_word + close % (b'"stop"' if job.stop else b'"length"'))
    tail = DONE_AND_END
    if job.include_usage:
        tail = _usage_event(envelope, job) + tail
    role = chunk(envelope + _ROLE) if job.chat else b""
    return StreamFrames(role, tokens, last, tail, ident, created)


def empty_tail(job: Completion, ident: str, created: int) -> bytes:
    """What an EMPTY stream sends after its role delta, as one write.

    A finish_reason "stop" with no content, usage of 0 completion tokens if asked for,
    ``[DONE]`` and the terminating chunk.
    """
    envelope = _envelope(job, ident, created)
    if job.chat:
        stop = b'[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    else:
        stop = b'[{"index":0,"text":"","logprobs":null,"finish_reason":"stop"}]}\n\n'
    out = chunk(envelope + stop)
    if job.include_usage:
        out += _usage_event(envelope, job, 0)
    return out + DONE_AND_END


def whole_body(
    job: Completion,
    ident: str,
    created: int,
    *,
    empty: bool = False,
    words: tuple[str, ...] = WORDS,
) -> bytes:
    """The non-streaming answer: all ``max_tokens`` words at once, with usage.

    ``empty``: no words, ``finish_reason`` "stop" and 0 completion tokens.
    """
    n = 0 if empty else job.max_tokens
    text = "".join(words[k % len(words)] + " " for k in range(n))
    choice: dict[str, object] = {"index": 0}
    if job.chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice |= {"text": text, "logprobs": None}
    choice["finish_reason"] = "stop" if empty or job.stop else "length"
    return orjson.dumps(
        {
            "id": ident,
            "object": "chat.completion" if job.chat else "text_completion",
            "created": created,
            "model": job.model,
            "choices": [choice],
            "usage": usage(job, n),
        }
    )
