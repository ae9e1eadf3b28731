"""What one request did: the unit that flows from the engine to the histograms.

A record holds raw ``time.perf_counter_ns()`` stamps and counts, never parsed payloads:
keeping per-event dicts alive caused 150-300 ms GC pauses in measurements
(../shared/research/client-limits.md §3). Durations are derived when the record is folded
into a stage's histograms, once per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TokenSource(StrEnum):
    """Where ``output_tokens`` came from: the server's ``usage`` or our count of content events."""

    USAGE = "usage"
    EVENTS = "events"


class ErrorKind(StrEnum):
    """How a request failed. HTTP statuses are reported as ``http_<code>`` strings instead."""

    CONNECT = "connect_error"  # refused, unreachable, DNS
    TIMEOUT = "timeout"  # the target timeout ran out (connect, headers or the whole stream)
    NO_RESPONSE = "no_response"  # the connection closed or reset before any response head
    DROPPED = "connection_dropped"  # the connection closed or reset mid-response
    INCOMPLETE = "incomplete_stream"  # the body ended cleanly but without `data: [DONE]`
    MALFORMED = "malformed_event"  # an SSE event whose payload is not valid JSON
    ERROR_EVENT = "error_event"  # the server reported an error inside the stream
    NOT_SSE = "not_sse"  # status 200 but the body is not an event stream
    EMPTY = "empty_completion"  # the stream finished with no content tokens at all
    BAD_RESPONSE = "bad_response"  # a non-streaming body that is not a completion
    PROTOCOL = "protocol_error"  # HTTP framing the client could not parse
    INTERRUPTED = "interrupted"  # in flight when the run was stopped (Ctrl-C, SIGTERM)
    CLIENT = "client_error"  # a fault in loadbench itself; counted, never fatal, reported


def http_error(status: int) -> str:
    return f"http_{status}"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request, from the moment it was due to its last byte.

    Stamps are ``perf_counter_ns`` values on one clock. For closed-loop stages
    ``due_ns == sent_ns``; for open-loop stages ``sent_ns - due_ns`` is schedule lag.
    ``token_ns`` holds a stamp per content-bearing event (role-only deltas and the usage
    chunk excluded); the first is the first token. ``error`` is ``None`` when the request
    succeeded, else an ``ErrorKind`` value or ``http_<status>``.
    """

    index: int
    warmup: bool
    due_ns: int
    sent_ns: int
    end_ns: int
    token_ns: tuple[int, ...]
    output_tokens: int
    counted_by: TokenSource
    error: str | None = None
    status: int | None = None
    prompt_tokens: int | None = None
    detail: str | None = None  # failures only: a short, redacted description for the report
    # The server's own account of the request, when it gives one (llama.cpp's `timings`):
    server_prefill_us: int | None = None  # prompt processing
    server_decode_us: int | None = None  # token generation
    cached_tokens: int | None = None  # prompt tokens served from the server's prompt cache

    @property
    def ok(self) -> bool:
        return self.error is None
