"""Sample answers: each prompt asked once, alone, so a person (or a judge) can read what the
model said, with the latency of that one answer beside it.

Not the hot path: one request at a time over httpx's own client, like ``loadbench check``,
after (or before) the load, never during it. The answer is kept whole up to
``limit_bytes`` of UTF-8, cut at a character boundary (``truncated`` says so); the stream
is still read to its end so that ``e2e_ms`` and ``output_tokens`` describe the whole
answer. ``output_tokens`` is the server's ``usage.completion_tokens`` when it sends one
(``stream_options.include_usage``), else the number of content events, which most servers
send one per token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from time import perf_counter_ns
from typing import Any

import httpx
import orjson

from loadbench.errors import TargetUnreachable
from loadbench.http import SSEDecoder
from loadbench.models.check import _headers

_ERROR_CHARS = 200


def bounded(text: str, limit_bytes: int) -> tuple[str, bool]:
    """``text`` cut to at most ``limit_bytes`` of UTF-8, never inside a character."""
    raw = text.encode("utf-8")
    if len(raw) <= limit_bytes:
        return text, False
    return raw[:limit_bytes].decode("utf-8", "ignore"), True


def _event(payload: bytes) -> tuple[str, int | None, str | None]:
    """(content, completion tokens from usage, error) of one SSE payload."""
    if payload.strip() == b"[DONE]":
        return "", None, None
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "", None, f"bad event: {payload[:80]!r}"
    if not isinstance(event, dict):
        return "", None, f"bad event: {payload[:80]!r}"
    if "error" in event:
        return "", None, str(event["error"])[:_ERROR_CHARS]
    usage = event.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    count = tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None
    choices = event.get("choices") or [{}]
    first = choices[0] if isinstance(choices[0], dict) else {}
    delta = first.get("delta") or {}
    text = delta.get("content") if isinstance(delta, dict) else None
    if text is None:
        text = first.get("text")
    return (text if isinstance(text, str) else ""), count, None


async def _sample(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    prompt_id: str,
    prompt: str,
    limit_bytes: int,
) -> dict[str, Any]:
    start = perf_counter_ns()
    first: int | None = None
    end: int | None = None
    pieces: list[str] = []
    events = 0
    usage_tokens: int | None = None
    error: str | None = None
    try:
        async with client.stream("POST", url, content=orjson.dumps(body)) as response:
            if response.status_code != 200:
                text = (await response.aread())[:_ERROR_CHARS].decode("utf-8", "replace")
                error = f"HTTP {response.status_code}: {text.strip()}".rstrip(": ")
            else:
                decoder = SSEDecoder()
                async for chunk in response.aiter_raw():
                    for payload in decoder.feed(chunk):
                        text, count, bad = _event(payload)
                        if bad is not None:
                            error = error or bad
                        if count is not None:
                            usage_tokens = count
                        if text:
                            first = first or perf_counter_ns()
                            events += 1
                            pieces.append(text)
                end = perf_counter_ns()
    except httpx.TimeoutException:
        error = "timed out"
    except httpx.ConnectError:
        raise  # the caller tells an absent server from a failing one
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
    if error is None and not pieces:
        error = "no content in the answer"
    answer, truncated = bounded("".join(pieces), limit_bytes)
    return {
        "prompt_id": prompt_id,
        "prompt": prompt,
        "answer": answer,
        "truncated": truncated,
        "ttft_ms": None if first is None else round((first - start) / 1e6, 2),
        "e2e_ms": None if end is None or error else round((end - start) / 1e6, 2),
        "output_tokens": usage_tokens if usage_tokens is not None else events,
        "error": error,
    }


def _failed(prompt_id: str, prompt: str, error: str) -> dict[str, Any]:
    return {
        "prompt_id": prompt_id,
        "prompt": prompt,
        "answer": "",
        "truncated": False,
        "ttft_ms": None,
        "e2e_ms": None,
        "output_tokens": 0,
        "error": error[:_ERROR_CHARS],
    }


async def collect_samples(
    base_url: str,
    served_as: str,
    prompts: Sequence[tuple[str, str]],
    *,
    max_tokens: int,
    temperature: float | None,
    extra: Mapping[str, object],
    api_key: str | None,
    timeout_s: float,
    limit_bytes: int = 4096,
) -> list[dict[str, Any]]:
    """One sample per ``(prompt_id, text)``, in order, each asked alone (concurrency 1).

    Every failure (HTTP status, a dropped stream, a timeout, an error event, an empty
    answer) is the sample's ``error``; ``e2e_ms`` is None for a failed sample. Raises
    ``TargetUnreachable`` only when the first request cannot connect at all: a server that
    is not there, not a server that fails. ``timeout_s`` bounds each wait for the server
    (connect, each read), not a whole answer, which may be long.
    """
    url = base_url.rstrip("/") + "/chat/completions"
    out: list[dict[str, Any]] = []
    async with httpx.AsyncClient(
        headers=_headers(api_key), timeout=httpx.Timeout(timeout_s), trust_env=False
    ) as client:
        for prompt_id, prompt in prompts:
            body: dict[str, Any] = {
                **extra,
                "model": served_as,
                "messages": [{"role": "user", "content": prompt}],
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_tokens": max_tokens,
            }
            if temperature is not None:
                body["temperature"] = temperature
            try:
                sample = await _sample(client, url, body, prompt_id, prompt, limit_bytes)
            except httpx.ConnectError as exc:
                if not out:
                    raise TargetUnreachable(f"cannot reach {base_url}: {exc}") from None
                sample = _failed(prompt_id, prompt, f"ConnectError: {exc}")
            out.append(sample)
    return out
