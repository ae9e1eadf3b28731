"""``loadbench check``: is every model there and does it answer, before any load is sent.

The Foundry Local workshop's validation checklist in one step: ask the endpoint for its
models (``GET /v1/models``, with the API key when one is configured, so a server that
requires one does not answer 401 and leave the check silently empty), resolve each name as
the user typed it to a listed id, and send each one short streaming chat request. Not the
hot path: one request per model, over httpx's own client, keeping the answer's first words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from time import perf_counter_ns
from typing import Any

import anyio
import httpx
import orjson

from loadbench import __version__
from loadbench.errors import TargetUnreachable, UsageError
from loadbench.http import SSEDecoder
from loadbench.models.resolve import Resolution, resolve

CHECK_PROMPT = "Say hello in five words."
_ANSWER_CHARS = 80


@dataclass(frozen=True)
class Listing:
    """What ``/v1/models`` said: ids, or why there are none (``ids is None``)."""

    ids: tuple[str, ...] | None
    problem: str | None = None


@dataclass(frozen=True)
class ModelCheck:
    model: str
    served_as: str
    listed: bool | None  # None: the server lists no models (or would not say)
    answered: bool
    ttft_ms: float | None
    tokens: int
    answer: str  # the first words, for a person to glance at
    error: str | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"user-agent": f"loadbench/{__version__}"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


async def list_models(client: httpx.AsyncClient, base_url: str) -> Listing:
    """The served ids; raises ``TargetUnreachable`` only when nothing answers at all."""
    url = base_url.rstrip("/") + "/models"
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        raise TargetUnreachable(f"cannot reach {base_url}: {exc}") from None
    if response.status_code != 200:
        hint = (
            " (is an API key needed? set target.api_key_env)"
            if response.status_code
            in (
                401,
                403,
            )
            else ""
        )
        return Listing(None, f"GET {url}: HTTP {response.status_code}{hint}")
    try:
        data = orjson.loads(response.content)["data"]
        return Listing(tuple(str(m["id"]) for m in data))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return Listing(None, f"GET {url}: not an OpenAI model list")


def _content(payload: bytes) -> tuple[str, bool]:
    """(text, is_error) of one SSE payload; ``[DONE]`` and empty deltas give ``""``."""
    if payload.strip() == b"[DONE]":
        return "", False
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "", True
    if not isinstance(event, dict):
        return "", True
    if "error" in event:
        return str(event["error"])[:200], True
    choices = event.get("choices") or [{}]
    first = choices[0] if isinstance(choices[0], dict) else {}
    delta = first.get("delta") or {}
    text = delta.get("content") if isinstance(delta, dict) else None
    if text is None:
        text = first.get("text")
    return (text if isinstance(text, str) else ""), False


async def _ask(
    client: httpx.AsyncClient,
    base_url: str,
    model: str,
    served_as: str,
    listed: bool | None,
    body_extra: Mapping[str, object],
    max_tokens: int,
) -> ModelCheck:
    body: dict[str, Any] = {
        **body_extra,
        "model": served_as,
        "messages": [{"role": "user", "content": CHECK_PROMPT}],
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    url = base_url.rstrip("/") + "/chat/completions"
    start = perf_counter_ns()
    first: int | None = None
    pieces: list[str] = []
    tokens = 0
    error: str | None = None
    try:
        async with client.stream("POST", url, content=orjson.dumps(body)) as response:
            if response.status_code != 200:
                text = (await response.aread())[:200].decode("utf-8", "replace").strip()
                error = (
                    f"HTTP {response.status_code}: {text}"
                    if text
                    else (f"HTTP {response.status_code}")
                )
            else:
                decoder = SSEDecoder()
                async for chunk in response.aiter_raw():
                    for payload in decoder.feed(chunk):
                        text, bad = _content(payload)
                        if bad:
                            error = error or f"bad event: {text or payload[:80]!r}"
                        elif text:
                            first = first or perf_counter_ns()
                            tokens += 1
                            pieces.append(text)
    except httpx.TimeoutException:
        error = "timed out"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    if error is None and not pieces:
        error = "no content in the answer"
    answer = " ".join("".join(pieces).split())
    return ModelCheck(
        model=model,
        served_as=served_as,
        listed=listed,
        answered=error is None,
        ttft_ms=None if first is None else round((first - start) / 1e6, 2),
        tokens=tokens,
        answer=answer[:_ANSWER_CHARS],
        error=error,
    )


async def check_models(
    base_url: str,
    models: Sequence[str],
    *,
    api_key: str | None = None,
    timeout_s: float = 30.0,
    max_tokens: int = 16,
    body_extra: Mapping[str, object] | None = None,
) -> tuple[Listing, list[ModelCheck]]:
    """List, resolve and ask every model in turn (one at a time: a check, not a load)."""
    if not models:
        raise UsageError("check: no models to check (give --model or a scenario with models)")
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise UsageError(f"check: timeout must be a positive number, got {timeout_s!r}")
    timeout = httpx.Timeout(timeout_s)
    async with httpx.AsyncClient(
        headers=_headers(api_key), timeout=timeout, trust_env=False
    ) as client:
        listing = await list_models(client, base_url)
        results = []
        for model in models:
            results.append(
                await _check_one(client, base_url, model, listing, body_extra or {}, max_tokens)
            )
    return listing, results


async def _check_one(
    client: httpx.AsyncClient,
    base_url: str,
    model: str,
    listing: Listing,
    body_extra: Mapping[str, object],
    max_tokens: int,
) -> ModelCheck:
    if listing.ids is None:
        return await _ask(client, base_url, model, model, None, body_extra, max_tokens)
    try:
        found: Resolution = resolve(model, listing.ids)
    except UsageError as exc:
        return ModelCheck(model, model, False, False, None, 0, "", str(exc))
    listed = found.how != "unlisted"
    return await _ask(client, base_url, model, found.served_as, listed, body_extra, max_tokens)


def run_check(
    base_url: str, models: Sequence[str], **options: Any
) -> tuple[Listing, list[ModelCheck]]:
    """The synchronous entry for the CLI."""
    return anyio.run(lambda: check_models(base_url, models, **options))
