"""The simulated server over real sockets on 127.0.0.1: protocol, timing model, faults.

Timing assertions compare one simulated duration with another several times its size, so
they hold on a loaded machine; exact speed is `make bench`'s business.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import psutil
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from loadbench.errors import LoadbenchError, UsageError
from loadbench.http.sse import SSEDecoder
from loadbench.sim.faults import NOT_SSE_BODY, draw_fault
from loadbench.sim.server import (
    Fault,
    SimConfig,
    _parse_args,
    config_to_args,
    serve,
    simulator_process,
)

FAST = SimConfig(ttft_ms=5.0, itl_ms=1.0)
CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say three"}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def simulator(config: SimConfig = FAST) -> AsyncIterator[httpx.AsyncClient]:
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, config)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(
            base_url=base, timeout=httpx.Timeout(10), trust_env=False
        ) as client:
            yield client
        tg.cancel_scope.cancel()


class Stream:
    """One streamed response: each SSE payload with its arrival time, and how it ended."""

    def __init__(self) -> None:
        self.events: list[tuple[float, bytes]] = []
        self.error: Exception | None = None
        self.headers: httpx.Headers = httpx.Headers()

    @property
    def payloads(self) -> list[bytes]:
        return [p for _, p in self.events]

    def tokens(self) -> list[tuple[float, dict[str, Any]]]:
        """Token events only: those whose first choice carries content (or text)."""
        out = []
        for t, p in self.events:
            try:
                event = json.loads(p)
            except ValueError:
                continue
            choices = event.get("choices") if isinstance(event, dict) else None
            if not choices:
                continue
            choice = choices[0]
            if choice.get("text") or choice.get("delta", {}).get("content"):
                out.append((t, event))
        return out


async def stream(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Stream:
    result = Stream()
    buffer = b""
    try:
        async with client.stream("POST", path, json={**body, "stream": True}) as response:
            result.headers = response.headers
            assert response.status_code == 200
            async for data in response.aiter_raw():
                buffer += data
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    assert event.startswith(b"data: ")
                    result.events.append((time.perf_counter(), event[6:]))
    except httpx.HTTPError as exc:
        result.error = exc
    return result


async def wait_stats(
    client: httpx.AsyncClient, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The server counts an outcome just after its last byte, so poll briefly."""
    with anyio.fail_after(3):
        while True:
            stats: dict[str, Any] = (await client.get("/stats")).json()
            if ready(stats):
                return stats
            await anyio.sleep(0.01)


# -- plain endpoints -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_health_models_and_stats() -> None:
    with anyio.fail_after(5):
        async with simulator() as client:
            assert (await client.get("/health")).json() == {"status": "ok"}
            models = (await client.get("/v1/models")).json()
            assert models == {
                "object": "list",
                "data": [{"id": "sim-model", "object": "model", "owned_by": "loadbench"}],
            }
            stats = (await client.get("/stats")).json()
            assert stats == (await client.get("/v1/stats")).json()
            assert stats == {
                "requests": 0,
                "outcomes": dict.fromkeys(
                    [
                        "ok",
                        "http_500",
                        "http_429",
                        "drop",
                        "malformed",
                        "stall",
                        "http_503",
                        "http_401",
                        "reset",
                        "silent",
                        "not_sse",
                        "empty",
                        "no_done",
                        "bad_json",
                        "bad_request",
                        "client_disconnect",
                    ],
                    0,
                ),
                "tokens_sent": 0,
                "active": 0,
                "queued": 0,
                "max_active": 0,
                "prefix_cache_hit_tokens": 0,
            }


@pytest.mark.anyio
async def test_unknown_path_and_wrong_method() -> None:
    with anyio.fail_after(5):
        async with simulator() as client:
            missing = await client.get("/v2/nothing")
            assert missing.status_code == 404
            assert missing.json()["error"]["type"] == "invalid_request_error"
            assert (await client.get(CHAT)).status_code == 405
            assert (await client.post("/health")).status_code == 405


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'["a list"]',
        b'{"model": "m"}',
        b'{"messages": [], "max_tokens": 3}',
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}',
    ],
)
async def test_bad_request_body_is_400(body: bytes) -> None:
    with anyio.fail_after(5):
        async with simulator() as client:
            response = await client.post(CHAT, content=body)
            assert response.status_code == 400
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["message"]
            stats = await wait_stats(client, lambda s: s["outcomes"]["bad_request"] == 1)
            assert stats["requests"] == 1


@pytest.mark.anyio
async def test_completions_needs_a_prompt() -> None:
    with anyio.fail_after(5):
        async with simulator() as client:
            response = await client.post("/v1/completions", json={"messages": MESSAGES})
            assert response.status_code == 400
            assert "prompt" in response.json()["error"]["message"]


# -- streaming -----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("include_usage", [False, True])
async def test_chat_stream(include_usage: bool) -> None:
    body: dict[str, Any] = {"model": "any/model-7b", "messages": MESSAGES, "max_tokens": 5}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with anyio.fail_after(5):
        async with simulator() as client:
            result = await stream(client, CHAT, body)
            assert result.error is None
            assert result.headers["content-type"] == "text/event-stream"
            assert result.headers["transfer-encoding"] == "chunked"
            payloads = result.payloads
            assert payloads[-1] == b"[DONE]"
            events = [json.loads(p) for p in payloads[:-1]]
            role = events[0]
            assert role["object"] == "chat.completion.chunk"
            assert role["model"] == "any/model-7b"
            assert role["choices"] == [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ]
            tokens = events[1:6]
            assert len(tokens) == 5
            assert all(e["id"] == role["id"] for e in tokens)
            words = [e["choices"][0]["delta"]["content"] for e in tokens]
            assert all(w.endswith(" ") and w.strip() for w in words)
            reasons = [e["choices"][0]["finish_reason"] for e in tokens]
            assert reasons == [None, None, None, None, "length"]
            if include_usage:
                assert len(events) == 7
                assert events[6]["choices"] == []
                assert events[6]["usage"] == {
                    "prompt_tokens": 4,
                    "completion_tokens": 5,
                    "total_tokens": 9,
                }
            else:
                assert len(events) == 6
            stats = await wait_stats(client, lambda s: s["outcomes"]["ok"] == 1)
            assert stats["requests"] == 1
            assert stats["tokens_sent"] == 5


@pytest.mark.anyio
async def test_completions_stream() -> None:
    body = {"prompt": "one two three", "max_tokens": 4, "stream_options": {"include_usage": True}}
    with anyio.fail_after(5):
        async with simulator() as client:
            result = await stream(client, "/v1/completions", body)
            assert result.error is None
            assert result.payloads[-1] == b"[DONE]"
            events = [json.loads(p) for p in result.payloads[:-1]]
            assert len(events) == 5  # no role event in the completions API
            assert all(e["object"] == "text_completion" for e in events)
            assert all(e["model"] == "sim-model" for e in events)
            texts = [e["choices"][0]["text"] for e in events[:4]]
            assert all(t.endswith(" ") for t in texts)
            assert events[3]["choices"][0]["finish_reason"] == "length"
            assert events[4]["usage"] == {
                "prompt_tokens": 3,
                "completion_tokens": 4,
                "total_tokens": 7,
            }


@pytest.mark.anyio
async def test_non_streaming_chat_and_completions() -> None:
    config = SimConfig(ttft_ms=5.0, itl_ms=1.0, max_tokens_default=7)
    with anyio.fail_after(5):
        async with simulator(config) as client:
            chat = (await client.post(CHAT, json={"model": "m", "messages": MESSAGES})).json()
            assert chat["object"] == "chat.completion"
            assert chat["model"] == "m"
            message = chat["choices"][0]["message"]
            assert message["role"] == "assistant"
            assert len(message["content"].split()) == 7
            assert chat["choices"][0]["finish_reason"] == "length"
            assert chat["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}

            body = {"prompt": ["a b", "c"], "max_tokens": 3, "stream": False}
            text = (await client.post("/v1/completions", json=body)).json()
            assert text["object"] == "text_completion"
            assert len(text["choices"][0]["text"].split()) == 3
            assert text["usage"]["prompt_tokens"] == 3
            stats = await wait_stats(client, lambda s: s["outcomes"]["ok"] == 2)
            assert stats["tokens_sent"] == 10


@pytest.mark.anyio
async def test_body_of_a_few_megabytes() -> None:
    prompt = "word " * 600_000  # 3 MB
    with anyio.fail_after(10):
        async with simulator() as client:
            response = await client.post(
                "/v1/completions", json={"prompt": prompt, "max_tokens": 1}
            )
            assert response.json()["usage"]["prompt_tokens"] == 600_000


# -- raw HTTP/1.1 ----------------------------------------------------------------------------


async def read_response(reader: BufferedByteReceiveStream) -> tuple[bytes, bytes]:
    head = await reader.receive_until(b"\r\n\r\n", 65536)
    lines = head.lower().split(b"\r\n")
    length = next(int(line[15:]) for line in lines if line.startswith(b"content-length:"))
    return head, await reader.receive_exactly(length)


@pytest.mark.anyio
async def test_keep_alive_pipelining_and_connection_close() -> None:
    request = b"GET /health HTTP/1.1\r\nHost: sim\r\n\r\n"
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, FAST)
            async with await anyio.connect_tcp("127.0.0.1", port) as sock:
                reader = BufferedByteReceiveStream(sock)
                for _ in range(2):  # two requests, one connection
                    await sock.send(request)
                    head, body = await read_response(reader)
                    assert head.startswith(b"HTTP/1.1 200 ")
                    assert body == b'{"status":"ok"}'
                await sock.send(request + request)  # pipelined
                for _ in range(2):
                    assert (await read_response(reader))[1] == b'{"status":"ok"}'
                post = json.dumps({"messages": MESSAGES, "max_tokens": 2}).encode()
                await sock.send(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%b" % (len(post), post)
                )
                head, body = await read_response(reader)
                assert b"connection: close" in head.lower()
                assert json.loads(body)["usage"]["completion_tokens"] == 2
                with pytest.raises(anyio.EndOfStream):
                    await sock.receive()
            tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "garbage",
    [
        b"this is not http\r\n\r\n",
        # A body the server never reads: closing at once would reset the connection and
        # could destroy the 400 before the client reads it.
        b"POST /v1/completions HTTP/1.1\r\nContent-Length: many\r\n\r\n" + b"x" * 300_000,
    ],
)
async def test_malformed_http_is_400_and_closed(garbage: bytes) -> None:
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, FAST)
            async with await anyio.connect_tcp("127.0.0.1", port) as sock:
                await sock.send(garbage)
                reader = BufferedByteReceiveStream(sock)
                head, body = await read_response(reader)
                assert head.startswith(b"HTTP/1.1 400 ")
                assert json.loads(body)["error"]["type"] == "invalid_request_error"
                with pytest.raises(anyio.EndOfStream):
                    await sock.receive()
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_expect_100_continue() -> None:
    post = json.dumps({"prompt": "x", "max_tokens": 1}).encode()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, FAST)
            async with await anyio.connect_tcp("127.0.0.1", port) as sock:
                await sock.send(
                    b"POST /v1/completions HTTP/1.1\r\nHost: sim\r\nExpect: 100-continue\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(post)
                )
                reader = BufferedByteReceiveStream(sock)
                interim = await reader.receive_until(b"\r\n\r\n", 1024)
                assert interim == b"HTTP/1.1 100 Continue"
                await sock.send(post)
                head, body = await read_response(reader)
                assert head.startswith(b"HTTP/1.1 200 ")
                assert json.loads(body)["usage"]["completion_tokens"] == 1
            tg.cancel_scope.cancel()


# -- the timing model ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_requests_beyond_the_slots_queue() -> None:
    config = SimConfig(ttft_ms=50.0, itl_ms=1.0, slots=2)
    body = {"messages": MESSAGES, "max_tokens": 3}
    ttfts: list[float] = []
    with anyio.fail_after(5):
        async with simulator(config) as client:
            start = time.perf_counter()

            async def one() -> None:
                result = await stream(client, CHAT, body)
                ttfts.append(result.tokens()[0][0] - start)

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(one)
            stats = await wait_stats(client, lambda s: s["outcomes"]["ok"] == 4)
    ttfts.sort()
    assert ttfts[2] >= 1.5 * max(ttfts[:2]), ttfts
    assert stats["max_active"] == 2
    assert stats["active"] == stats["queued"] == 0


@pytest.mark.anyio
async def test_heavy_jitter_keeps_every_token() -> None:
    config = SimConfig(ttft_ms=5.0, itl_ms=2.0, jitter=3.0, seed=1)  # many draws clamp to 0
    with anyio.fail_after(5):
        async with simulator(config) as client:
            result = await stream(client, "/v1/completions", {"prompt": "x", "max_tokens": 30})
            assert result.error is None
            assert len(result.tokens()) == 30
            assert result.payloads[-1] == b"[DONE]"


@pytest.mark.anyio
async def test_inter_token_gap_grows_with_the_batch() -> None:
    config = SimConfig(ttft_ms=5.0, itl_ms=10.0, batch_itl_factor=1.0, slots=8)
    body = {"messages": MESSAGES, "max_tokens": 10}

    def median_gap(result: Stream) -> float:
        times = [t for t, _ in result.tokens()]
        gaps = sorted(b - a for a, b in itertools.pairwise(times))
        return gaps[len(gaps) // 2]

    with anyio.fail_after(10):
        async with simulator(config) as client:
            alone = median_gap(await stream(client, CHAT, body))
            results: list[Stream] = []

            async def one() -> None:
                results.append(await stream(client, CHAT, body))

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(one)
    batched = min(median_gap(r) for r in results)
    assert batched >= 2 * alone, (alone, batched)  # 40 ms against 10 ms by the model


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("config", "status"),
    [
        (dataclasses.replace(FAST, slots=1, error_rate=1.0), 500),
        (dataclasses.replace(FAST, slots=1, rate_limit_rate=1.0), 429),
        (dataclasses.replace(FAST, slots=1, unavailable_rate=1.0), 503),
        (dataclasses.replace(FAST, slots=1, unauthorized_rate=1.0), 401),
    ],
)
async def test_http_error_faults(config: SimConfig, status: int) -> None:
    with anyio.fail_after(5):
        async with simulator(config) as client:
            for streamed in (True, False):
                body = {"messages": MESSAGES, "max_tokens": 3, "stream": streamed}
                response = await client.post(CHAT, json=body)
                assert response.status_code == status
                assert response.headers["content-type"] == "application/json"
                error = response.json()["error"]
                assert error["message"]
                assert error["type"]
                if status == 429:
                    assert response.headers["retry-after"] == "1"
                if status == 401:
                    assert error["code"] == "invalid_api_key"
                    assert response.headers["www-authenticate"].startswith("Bearer")
            name = f"http_{status}"
            stats = await wait_stats(client, lambda s: s["outcomes"][name] == 2)
            assert stats["max_active"] == 0  # answered without taking a slot


@pytest.mark.anyio
async def test_drop_fault_closes_mid_stream() -> None:
    config = SimConfig(ttft_ms=5.0, itl_ms=1.0, drop_rate=1.0, seed=7)
    with anyio.fail_after(5):
        async with simulator(config) as client:
            for _ in range(3):
                result = await stream(client, CHAT, {"messages": MESSAGES, "max_tokens": 10})
                assert isinstance(result.error, httpx.RemoteProtocolError)
                assert 1 <= len(result.tokens()) <= 9
                assert b"[DONE]" not in result.payloads
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(CHAT, json={"messages": MESSAGES, "max_tokens": 3})
            stats = await wait_stats(client, lambda s: s["outcomes"]["drop"] == 4)
            assert stats["outcomes"]["ok"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("field", "name", "event", "data"),
    [
        # The second line lacks `data:`: SSE drops it, so the event's data is a fragment.
        (
            "malformed_rate",
            "malformed",
            b'data: {"choices": [{"index": 0,\n"delta": {"content": "x "}}]}\n\n',
            b'{"choices": [{"index": 0,',
        ),
        # Well-framed, but the JSON lacks its closing brace.
        (
            "bad_json_rate",
            "bad_json",
            b'data: {"choices": [{"index": 0, "delta": {"content": "x "}}]\n\n',
            b'{"choices": [{"index": 0, "delta": {"content": "x "}}]',
        ),
    ],
)
async def test_bad_event_faults_send_one_bad_event_then_continue(
    field: str, name: str, event: bytes, data: bytes
) -> None:
    config = SimConfig(ttft_ms=5.0, itl_ms=1.0, **{field: 1.0})
    with anyio.fail_after(5):
        async with simulator(config) as client:
            result = await stream(client, CHAT, {"messages": MESSAGES, "max_tokens": 4})
            assert result.error is None
            # role, first token, then the bad one (as sent: this helper splits on blank lines)
            assert b"data: " + result.payloads[2] + b"\n\n" == event
            assert SSEDecoder().feed(event) == [data]
            assert not _is_json(data)
            del result.events[2]
            assert all(_is_json(p) for p in result.payloads[:-1])
            assert len(result.tokens()) == 4  # every token still came
            assert result.payloads[-1] == b"[DONE]"
            await wait_stats(client, lambda s: s["outcomes"][name] == 1)


@pytest.mark.anyio
async def test_stall_fault_pauses_after_the_first_token() -> None:
    config = SimConfig(ttft_ms=5.0, itl_ms=1.0, stall_rate=1.0, stall_s=0.3)
    with anyio.fail_after(5):
        async with simulator(config) as client:
            result = await stream(client, CHAT, {"messages": MESSAGES, "max_tokens": 3})
            assert result.error is None
            times = [t for t, _ in result.tokens()]
            assert len(times) == 3
            assert times[1] - times[0] >= 0.25
            assert times[2] - times[1] < 0.25
            assert result.payloads[-1] == b"[DONE]"
            await wait_stats(client, lambda s: s["outcomes"]["stall"] == 1)


@pytest.mark.anyio
async def test_a_client_leaving_a_stall_counts_as_the_stall() -> None:
    config = SimConfig(ttft_ms=5.0, itl_ms=1.0, stall_rate=1.0, stall_s=30.0, slots=1)
    body = {"messages": MESSAGES, "max_tokens": 3, "stream": True}
    with anyio.fail_after(5):
        async with simulator(config) as client:
            async with client.stream("POST", CHAT, json=body) as response:
                async for data in response.aiter_raw():
                    if b'"content":"' in data.replace(b'"content":""', b""):
                        break  # the first token: the stall has begun
            stats = await wait_stats(client, lambda s: s["outcomes"]["stall"] == 1)
            assert stats["outcomes"]["client_disconnect"] == 0
            assert stats["active"] == 0  # the slot is free again, not held for 30 s


@pytest.mark.anyio
async def test_reset_fault_resets_before_any_byte() -> None:
    config = dataclasses.replace(FAST, reset_rate=1.0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, config)
            for streamed in (True, False):
                post = json.dumps({"messages": MESSAGES, "max_tokens": 2, "stream": streamed})
                async with await anyio.connect_tcp("127.0.0.1", port) as sock:
                    await sock.send(
                        b"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\n"
                        b"Content-Length: %d\r\n\r\n%b" % (len(post), post.encode())
                    )
                    # A real RST where SO_LINGER works (Linux, where CI runs), else a FIN.
                    gone = anyio.BrokenResourceError if sys.platform == "linux" else Exception
                    with pytest.raises(gone):
                        await sock.receive()
            async with httpx.AsyncClient(trust_env=False) as client:
                stats = (await client.get(f"http://127.0.0.1:{port}/stats")).json()
            assert stats["outcomes"]["reset"] == stats["requests"] == 2
            assert stats["max_active"] == 0
            tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize("streamed", [True, False])
async def test_silent_fault_sends_the_head_then_nothing(streamed: bool) -> None:
    config = SimConfig(ttft_ms=5.0, itl_ms=1.0, silent_rate=1.0, stall_s=0.3)
    body = {"messages": MESSAGES, "max_tokens": 3, "stream": streamed}
    with anyio.fail_after(5):
        async with simulator(config) as client:
            start = time.perf_counter()
            async with client.stream("POST", CHAT, json=body) as response:
                head_s = time.perf_counter() - start
                assert response.status_code == 200
                got = b""
                async for data in response.aiter_raw():
                    if not got:
                        first_s = time.perf_counter() - start
                    got += data
            assert head_s < 0.2 <= 0.25 <= first_s
            if streamed:
                assert got.endswith(b"data: [DONE]\n\n")
            else:
                assert json.loads(got)["usage"]["completion_tokens"] == 3
            await wait_stats(client, lambda s: s["outcomes"]["silent"] == 1)


@pytest.mark.anyio
async def test_not_sse_fault_answers_html() -> None:
    config = SimConfig(ttft_ms=5.0, itl_ms=1.0, not_sse_rate=1.0, slots=1)
    with anyio.fail_after(5):
        async with simulator(config) as client:
            for streamed in (True, False):
                body = {"messages": MESSAGES, "max_tokens": 3, "stream": streamed}
                response = await client.post(CHAT, json=body)
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/html")
                assert response.headers["content-length"] == str(len(NOT_SSE_BODY))
                assert response.content == NOT_SSE_BODY
            stats = await wait_stats(client, lambda s: s["outcomes"]["not_sse"] == 2)
            assert stats["max_active"] == 0  # answered at once, like a proxy's page


@pytest.mark.anyio
@pytest.mark.parametrize("path", [CHAT, "/v1/completions"])
async def test_empty_fault_finishes_without_content(path: str) -> None:
    config = SimConfig(ttft_ms=5.0, itl_ms=1.0, empty_rate=1.0)
    body = {"max_tokens": 4, "stream_options": {"include_usage": True}}
    body |= {"messages": MESSAGES} if path == CHAT else {"prompt": "a b"}
    with anyio.fail_after(5):
        async with simulator(config) as client:
            result = await stream(client, path, body)
            assert result.error is None
            assert result.tokens() == []
            assert result.payloads[-1] == b"[DONE]"
            events = [json.loads(p) for p in result.payloads[:-1]]
            assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "stop"
            assert events[-1]["usage"]["completion_tokens"] == 0
            whole = (await client.post(path, json={**body, "stream": False})).json()
            assert whole["choices"][0]["finish_reason"] == "stop"
            assert whole["usage"]["completion_tokens"] == 0
            stats = await wait_stats(client, lambda s: s["outcomes"]["empty"] == 2)
            assert stats["tokens_sent"] == 0


@pytest.mark.anyio
async def test_no_done_fault_ends_cleanly_without_a_finish() -> None:
    config = SimConfig(ttft_ms=5.0, itl_ms=1.0, no_done_rate=1.0)
    body = {"messages": MESSAGES, "max_tokens": 4, "stream_options": {"include_usage": True}}
    with anyio.fail_after(5):
        async with simulator(config) as client:
            result = await stream(client, CHAT, body)
            assert result.error is None  # a clean chunked end, not a drop
            tokens = result.tokens()
            assert len(tokens) == 4
            assert all(e["choices"][0]["finish_reason"] is None for _, e in tokens)
            assert b"[DONE]" not in result.payloads
            await wait_stats(client, lambda s: s["outcomes"]["no_done"] == 1)


@pytest.mark.anyio
async def test_client_disconnect_frees_the_slot() -> None:
    config = SimConfig(ttft_ms=5.0, itl_ms=20.0, slots=1)
    long = {"messages": MESSAGES, "max_tokens": 200, "stream": True}  # 4 s if left running
    with anyio.fail_after(5):
        async with simulator(config) as client:
            async with client.stream("POST", CHAT, json=long) as response:
                seen = 0
                async for data in response.aiter_raw():
                    seen += data.count(b'"content":"')
                    if seen >= 3:
                        break
            with anyio.fail_after(2):
                short = {"messages": MESSAGES, "max_tokens": 3}
                response = await client.post(CHAT, json=short)
                assert response.json()["usage"]["completion_tokens"] == 3
            stats = await wait_stats(client, lambda s: s["outcomes"]["client_disconnect"] == 1)
            assert stats["outcomes"]["ok"] == 1
            assert stats["active"] == 0


def _is_json(payload: bytes) -> bool:
    try:
        json.loads(payload)
    except ValueError:
        return False
    return True


def test_fault_draw_is_seeded_and_follows_the_rates() -> None:
    config = SimConfig(error_rate=0.2, rate_limit_rate=0.1, drop_rate=0.3, stall_rate=0.1)
    rng_a, rng_b = random.Random(3), random.Random(3)
    plans_a = [draw_fault(rng_a, config, 10) for _ in range(4000)]
    plans_b = [draw_fault(rng_b, config, 10) for _ in range(4000)]
    assert plans_a == plans_b
    share = {f: sum(p.fault is f for p in plans_a) / 4000 for f in Fault}
    expected = {Fault.NONE: 0.3, Fault.HTTP_500: 0.2, Fault.HTTP_429: 0.1, Fault.DROP: 0.3}
    expected |= {Fault.MALFORMED: 0.0, Fault.STALL: 0.1}
    for fault, want in expected.items():
        assert abs(share[fault] - want) < 0.04, (fault, share[fault])
    drops = [p.drop_after for p in plans_a if p.fault is Fault.DROP]
    assert min(drops) == 1
    assert max(drops) == 9
    assert all(p.drop_after == 0 for p in plans_a if p.fault is not Fault.DROP)
    single = SimConfig(drop_rate=1.0)
    assert draw_fault(random.Random(0), single, 1).drop_after == 1


# -- configuration and the child process ---------------------------------------------------


def test_validate_reports_every_problem() -> None:
    assert SimConfig().validate() == []
    problems = SimConfig(slots=0, ttft_ms=-1.0, error_rate=1.5, max_tokens_default=0).validate()
    assert "slots: expected an integer >= 1, got 0" in problems
    assert "ttft_ms: expected a number >= 0, got -1.0" in problems
    assert "error_rate: expected a number between 0 and 1, got 1.5" in problems
    assert "max_tokens_default: expected an integer >= 1, got 0" in problems
    assert len(problems) == 4
    too_many = SimConfig(error_rate=0.6, drop_rate=0.6, slots=0).validate()
    assert len(too_many) == 2
    assert too_many[1] == (
        "fault rates: expected a sum <= 1, got 1.2 (error_rate 0.6 + drop_rate 0.6)"
    )
    assert SimConfig(jitter=float("nan")).validate() == ["jitter: expected a number >= 0, got nan"]


@pytest.mark.anyio
async def test_serve_refuses_an_invalid_config() -> None:
    with anyio.fail_after(5), pytest.raises(UsageError, match="slots"):
        await serve(SimConfig(slots=0))


def test_config_to_args_round_trips_through_the_parser() -> None:
    assert config_to_args(SimConfig()) == []
    config = SimConfig(
        ttft_ms=12.5,
        itl_ms=3.0,
        jitter=0.1,
        slots=3,
        batch_itl_factor=0.2,
        max_tokens_default=17,
        seed=42,
        error_rate=0.01,
        rate_limit_rate=0.02,
        drop_rate=0.03,
        malformed_rate=0.04,
        stall_rate=0.05,
        unavailable_rate=0.06,
        unauthorized_rate=0.07,
        reset_rate=0.08,
        silent_rate=0.09,
        not_sse_rate=0.1,
        empty_rate=0.11,
        no_done_rate=0.12,
        bad_json_rate=0.005,
        stall_s=1.5,
        prefill_ms_per_token=0.25,
        early_stop_rate=0.5,
        prefix_cache=True,
    )
    args = config_to_args(config)
    assert args[:2] == ["--ttft-ms", "12.5"]
    assert "--not-sse-rate" in args
    assert args[-1] == "--prefix-cache"  # a switch, no value
    assert len(args) == 47
    assert _parse_args(["--host", "::1", "--port", "9", *args]) == (config, "::1", 9)
    assert config_to_args(SimConfig(seed=0, slots=2)) == ["--slots", "2", "--seed", "0"]


def test_simulator_process_starts_answers_and_stops() -> None:
    command = [sys.executable, "-m", "loadbench.sim.server"]
    with simulator_process(FAST, command=command) as handle:
        assert handle.base_url.startswith("http://127.0.0.1:")
        assert handle.base_url.endswith("/v1")
        assert handle.started_ns < handle.ready_ns
        child = psutil.Process(handle.pid)
        response = httpx.get(handle.base_url.removesuffix("/v1") + "/health", trust_env=False)
        assert response.json() == {"status": "ok"}
        models = httpx.get(handle.base_url + "/models", trust_env=False).json()
        assert models["data"][0]["id"] == "sim-model"
    assert not child.is_running()


def test_simulator_process_reports_a_failed_start() -> None:
    command = [sys.executable, "-c", "import sys; sys.stderr.write('boom: no port'); sys.exit(3)"]
    with (
        pytest.raises(LoadbenchError, match=r"(?s)exited with code 3 .*boom: no port"),
        simulator_process(FAST, command=command),
    ):
        pass


def test_simulator_process_startup_is_bounded() -> None:
    command = [sys.executable, "-c", "import time; time.sleep(30)"]
    start = time.perf_counter()
    with (
        pytest.raises(LoadbenchError, match=r"did not announce its port within 0\.5 s"),
        simulator_process(FAST, startup_timeout_s=0.5, command=command),
    ):
        pass
    assert time.perf_counter() - start < 10


def test_default_child_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child gets the documented command line; a stand-in that exits is run instead."""
    seen: list[list[str]] = []
    real_popen = subprocess.Popen

    def record(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        seen.append(argv)
        return real_popen([sys.executable, "-c", "pass"], **kwargs)

    monkeypatch.setattr(subprocess, "Popen", record)
    with pytest.raises(LoadbenchError), simulator_process(SimConfig(slots=3)):
        pass
    prefix = [sys.executable, "-m", "loadbench", "simulate", "--host", "127.0.0.1", "--port", "0"]
    assert seen == [[*prefix, "--slots", "3"]]
