"""What a request says and what its stream said: the body, and the SSE events folded into
stamps and counts as they arrive.

Pure (no I/O), apart from ``LoadClient`` which sends and reads: ``StreamState`` takes any
sequence of event payloads, so tests feed it events without a socket. Parsed payloads are
never kept (../shared/research/client-limits.md §3: kept dicts caused 150-300 ms GC pauses);
an answer's text is kept only when a multi-turn session needs it for its next turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from loadbench.records import ErrorKind
from loadbench.scenario import Api, RequestSpec

__all__ = [
    "SERVER_TIMINGS",
    "ServerTimings",
    "StreamState",
    "item_body",
    "llamacpp_timings",
    "read_completion",
    "request_body",
]


def request_body(model: str, prompt: str, api: Api, spec: RequestSpec) -> bytes:
    """The JSON body for one prompt; built once per (model, prompt) and reused."""
    return item_body(model, ({"role": "user", "content": prompt},), {}, api, spec)


def item_body(
    model: str,
    messages: Sequence[Mapping[str, str]],
    fields: Mapping[str, object],
    api: Api,
    spec: RequestSpec,
) -> bytes:
    """The JSON body for one request: its messages (a session's history included), then
    ``[request]``'s settings, then a workload item's own ``fields`` (its ``max_tokens``,
    ``ignore_eos``), which win: the workload decided them per request. ``/v1/completions``
    has no roles: the contents are joined by blank lines."""
    body: dict[str, object] = {"model": model, "max_tokens": spec.max_tokens}
    if api is Api.CHAT:
        body["messages"] = list(messages)
    else:
        body["prompt"] = "\n\n".join(m["content"] for m in messages)
    if spec.temperature is not None:
        body["temperature"] = spec.temperature
    body["stream"] = spec.stream
    if spec.stream:
        body["stream_options"] = {"include_usage": True}
    body.update(spec.extra)
    body.update(fields)
    return orjson.dumps(body)


ServerTimings = tuple[int | None, int | None, int | None]  # prefill µs, decode µs, cached


def llamacpp_timings(obj: dict[str, Any]) -> ServerTimings | None:
    """llama.cpp's per-response ``timings`` (in the usage chunk, or the completion body).
    The seam for server-native timings: another server kind that reports its own prefill
    and decode per response needs one function of this shape, tried in ``SERVER_TIMINGS``.
    """
    t = obj.get("timings")
    if type(t) is not dict:
        return None
    return (
        _us_of_ms(t.get("prompt_ms")),
        _us_of_ms(t.get("predicted_ms")),
        _count(t.get("cache_n")),
    )


def _us_of_ms(value: object) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e12:
        return round(value * 1000)
    return None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


SERVER_TIMINGS = (llamacpp_timings,)


class StreamState:
    """What one SSE response has said so far: stamps and counts, no payloads.
    Pure (no I/O) so that arbitrary event sequences can be fed to it in tests.
    Content is any non-empty ``delta.content`` (chat), ``text`` (completions) or a
    reasoning delta (``reasoning_content``/``reasoning``, as vLLM and DeepSeek-style
    servers stream thoughts): the user waits for the first of any of them. A role-only
    delta and the final usage chunk carry no content and get no stamp.
    """

    __slots__ = (
        "cached_tokens",
        "chat",
        "completion_tokens",
        "done",
        "error_events",
        "finished",
        "malformed",
        "prompt_tokens",
        "server",
        "texts",
        "token_ns",
    )

    def __init__(self, chat: bool, texts: list[str] | None = None) -> None:
        """``texts``: where the answer's content pieces go, when a caller needs the answer
        (a session's next turn carries it); None keeps no payload at all."""
        self.chat = chat
        self.texts = texts
        self.cached_tokens: int | None = None
        self.token_ns: list[int] = []
        self.done = False
        self.finished = False
        self.malformed = 0
        self.error_events = 0
        self.completion_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.server: ServerTimings | None = None

    def feed(self, payload: bytes, now_ns: int) -> None:
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.malformed += 1
            return
        if type(obj) is not dict:
            self.malformed += 1
            return
        choices = obj.get("choices")
        if choices and type(choices) is list:
            choice = choices[0]
            if type(choice) is dict:
                if self.chat:
                    delta = choice.get("delta")
                    if type(delta) is dict and (
                        delta.get("content")
                        or delta.get("reasoning_content")
                        or delta.get("reasoning")
                    ):
                        self.token_ns.append(now_ns)
                        if self.texts is not None and type(delta.get("content")) is str:
                            self.texts.append(delta["content"])
                elif choice.get("text"):
                    self.token_ns.append(now_ns)
                    if self.texts is not None and type(choice["text"]) is str:
                        self.texts.append(choice["text"])
                if choice.get("finish_reason"):
                    self.finished = True
        usage = obj.get("usage")
        if usage and type(usage) is dict:
            self.usage(usage)
            self._server(obj)
        elif "timings" in obj:
            self._server(obj)
        if "error" in obj:
            self.error_events += 1

    def usage(self, usage: dict[str, Any]) -> None:
        """The server's ``usage``: token counts, and its prompt cache where it says."""
        completion = usage.get("completion_tokens")
        if type(completion) is int and completion >= 0:
            self.completion_tokens = completion
        prompt = usage.get("prompt_tokens")
        if type(prompt) is int and prompt >= 0:
            self.prompt_tokens = prompt
        details = usage.get("prompt_tokens_details")
        if type(details) is dict:  # OpenAI's and vLLM's account of the prompt cache
            self.cached_tokens = _count(details.get("cached_tokens"))

    def _server(self, obj: dict[str, Any]) -> None:
        for read in SERVER_TIMINGS:
            found = read(obj)
            if found is not None:
                self.server = found
                return

    def describe(self, error: str) -> str:
        """A sample message for the report; off the hot path (failures only)."""
        return {
            ErrorKind.ERROR_EVENT: f"{self.error_events} error event(s) in the stream",
            ErrorKind.MALFORMED: f"{self.malformed} event(s) whose payload is not valid JSON",
            ErrorKind.INCOMPLETE: "the stream ended with neither [DONE] nor a finish_reason",
            ErrorKind.EMPTY: "the stream finished without any content",
        }.get(ErrorKind(error), error)

    def outcome(self, leftover: bool) -> str | None:
        """The error class of a stream that ended cleanly at the HTTP level, or None."""
        if self.error_events:
            return ErrorKind.ERROR_EVENT
        if self.malformed:
            return ErrorKind.MALFORMED
        if not self.done and not self.finished:
            return ErrorKind.INCOMPLETE
        if not self.token_ns:
            return ErrorKind.EMPTY
        return None


def read_completion(body: bytes, state: StreamState, now_ns: int) -> str | None:
    """A non-streaming completion: E2E only; one stamp if it carries content."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ErrorKind.BAD_RESPONSE
    if type(obj) is not dict or type(obj.get("choices")) is not list or not obj["choices"]:
        return ErrorKind.BAD_RESPONSE
    choice = obj["choices"][0]
    if type(choice) is not dict:
        return ErrorKind.BAD_RESPONSE
    message = choice.get("message")
    text = message.get("content") if type(message) is dict else choice.get("text")
    usage = obj.get("usage")
    if type(usage) is dict:
        state.usage(usage)
    state._server(obj)
    if not text:
        return ErrorKind.EMPTY
    return None
