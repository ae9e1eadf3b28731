"""The client and its lean transport against canned servers: every way a response can go wrong.

Each canned server is a real TCP listener on 127.0.0.1 that answers every request with
fixed bytes, so each branch of the client is reached over a real socket, not a mock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import MappingProxyType

import anyio
import anyio.abc
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadbench.http.client import LoadClient, StreamState
from loadbench.records import RequestRecord
from loadbench.scenario.model import Api, RequestSpec
from tests.conftest import Sim

pytestmark = pytest.mark.anyio

SPEC = RequestSpec(max_tokens=4, temperature=None, stream=True, extra=MappingProxyType({}))
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def undercounted(data: bytes) -> bytes:
    """A chunk whose size line says one byte less than it carries."""
    return b"%x\r\n" % (len(data) - 1) + data + b"\r\n"


def event(obj: object) -> bytes:
    return chunk(b"data: " + orjson.dumps(obj) + b"\n\n")


def delta(content: str, finish: str | None = None) -> bytes:
    return event(
        {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}
    )


ROLE = event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
DONE = chunk(b"data: [DONE]\n\n")
END = b"0\r\n\r\n"

Reply = Callable[[bytes], bytes | None]  # request bytes -> response bytes, None = hang up


class Canned:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/v1"
        self.connections = 0
        self.requests: list[bytes] = []


async def _read_request(stream: anyio.abc.SocketStream) -> bytes | None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            buf += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return None
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive()
    return head + b"\r\n\r\n" + body


@asynccontextmanager
async def canned(reply: Reply, *, close_after: bool = False) -> AsyncIterator[Canned]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    server = Canned(listener.extra(anyio.abc.SocketAttribute.local_port))

    async def handle(stream: anyio.abc.SocketStream) -> None:
        server.connections += 1
        async with stream:
            while True:
                request = await _read_request(stream)
                if request is None:
                    return
                server.requests.append(request)
                answer = reply(request)
                if answer is None:
                    return
                try:
                    await stream.send(answer)
                except (anyio.BrokenResourceError, OSError):
                    return
                if close_after:
                    return

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield server
        tg.cancel_scope.cancel()


async def send(
    url: str,
    n: int = 1,
    *,
    api_key: str | None = None,
    transport: str = "auto",
    spec: RequestSpec = SPEC,
) -> list[RequestRecord]:
    async with LoadClient(
        base_url=url,
        api=Api.CHAT,
        spec=spec,
        timeout_s=5,
        max_connections=4,
        api_key=api_key,
        transport=transport,
    ) as client:
        with anyio.fail_after(15):
            return [
                await client.execute(index=i, warmup=False, model="m", prompt="hi")
                for i in range(n)
            ]


def fixed(data: bytes) -> Reply:
    return lambda _request: data


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (SSE_HEAD + ROLE + delta("a") + delta("b", "stop") + DONE + END, None),
        (SSE_HEAD + ROLE + delta("a") + delta("b", "stop") + END, None),  # no [DONE], finished
        (SSE_HEAD + ROLE + delta("a") + END, "incomplete_stream"),
        (SSE_HEAD + ROLE + DONE + END, "empty_completion"),
        (SSE_HEAD + delta("a") + chunk(b'data: {"choices": [\n\n') + DONE + END, "malformed_event"),
        (
            SSE_HEAD + delta("a") + event({"error": {"message": "out of memory"}}) + DONE + END,
            "error_event",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            "not_sse",
        ),
        (
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 43\r\n\r\n"
            b'{"error": {"message": "model is loading"}} ',
            "http_503",
        ),
        (b"HTTP/1.1 200 OK\r\n" + b"x" * 10, "no_response"),  # head never completed
        (b"NONSENSE\r\n\r\n", "protocol_error"),
        # A chunk whose size line undercounts its data: a framing error, not a cut event.
        (
            SSE_HEAD + ROLE + undercounted(b'data: {"choices": []}\n\n') + DONE + END,
            "protocol_error",
        ),
        # A POST is never followed to another place: the redirect is the server's answer.
        (
            b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:9/v1\r\n"
            b"content-length: 0\r\n\r\n",
            "http_307",
        ),
    ],
)
async def test_each_response_shape_gets_its_class(body: bytes, error: str | None) -> None:
    async with canned(fixed(body), close_after=True) as server:
        (rec,) = await send(server.url)
    assert rec.error == error
    if error is None:
        assert len(rec.token_ns) == 2
        assert rec.token_ns[0] >= rec.sent_ns
    if error == "http_503":
        assert rec.detail == "model is loading"


async def test_an_interim_response_and_the_reply_in_one_read() -> None:
    """100 Continue and the whole final response in one write: parsed from what was read,
    not left waiting for more bytes until the timeout."""
    reply = b"HTTP/1.1 100 Continue\r\n\r\n" + SSE_HEAD + ROLE + delta("a", "stop") + DONE + END
    async with canned(fixed(reply)) as server:  # the connection stays open after it
        (rec,) = await send(server.url)
    assert rec.error is None, rec.detail
    assert (rec.end_ns - rec.sent_ns) / 1e9 < 2.5  # the timeout is 5 s


async def test_a_body_cut_mid_stream_is_a_drop() -> None:
    async with canned(fixed(SSE_HEAD + ROLE + delta("a")), close_after=True) as server:
        (rec,) = await send(server.url)
    assert rec.error == "connection_dropped"
    assert len(rec.token_ns) == 1


async def test_hang_up_before_the_response_is_no_response() -> None:
    async with canned(lambda _r: None) as server:
        (rec,) = await send(server.url)
    assert rec.error == "no_response"


async def test_sse_framed_by_content_length_and_close() -> None:
    events = (
        b"data: "
        + orjson.dumps({"choices": [{"delta": {"content": "a\u2028b"}, "finish_reason": "stop"}]})
        + b"\r\n\r\ndata: [DONE]\r\n\r\n"
    )
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n"
    async with canned(fixed(head + b"content-length: %d\r\n\r\n" % len(events) + events)) as s:
        (rec,) = await send(s.url)
    assert rec.error is None
    assert rec.output_tokens == 1


async def test_keep_alive_reuses_one_connection() -> None:
    body = SSE_HEAD + delta("a", "stop") + DONE + END
    async with canned(fixed(body)) as server:
        records = await send(server.url, n=5)
    assert [r.error for r in records] == [None] * 5
    assert server.connections == 1


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    """No retry of a request: the server never saw it on the dead connection."""
    body = SSE_HEAD + delta("a", "stop") + DONE + END
    async with canned(fixed(body), close_after=True) as server:
        records = await send(server.url, n=3)
    assert [r.error for r in records] == [None] * 3
    assert len(server.requests) == 3


async def test_api_key_is_sent_but_never_reported() -> None:
    key = "sk-test-0123456789abcdef"
    echo: Reply = lambda request: (  # noqa: E731 - the server echoes the request, as some do
        b"HTTP/1.1 401 Unauthorized\r\ncontent-length: %d\r\n\r\n" % len(request) + request
    )
    async with canned(echo) as server:
        (rec,) = await send(server.url, api_key=key)
    assert f"authorization: Bearer {key}".encode() in server.requests[0]
    assert rec.error == "http_401"
    assert rec.detail is not None
    assert key not in rec.detail


async def test_httpx_own_transport_gives_the_same_answers(sim: Sim) -> None:
    lean = await send(sim.url, n=3, transport="lean")
    stock = await send(sim.url, n=3, transport="httpx")
    assert [r.output_tokens for r in lean] == [r.output_tokens for r in stock] == [4, 4, 4]
    assert all(r.error is None for r in lean + stock)


def test_stream_state_ignores_role_and_usage_chunks() -> None:
    state = StreamState(chat=True)
    state.feed(b'{"choices":[{"delta":{"role":"assistant","content":""}}]}', 1)
    state.feed(b'{"choices":[{"delta":{"reasoning_content":"hm"}}]}', 2)
    state.feed(b'{"choices":[{"delta":{"content":"x"},"finish_reason":"length"}]}', 3)
    state.feed(b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}', 4)
    state.feed(b"[DONE]", 5)
    assert state.token_ns == [2, 3]
    assert (state.completion_tokens, state.prompt_tokens) == (2, 3)
    assert state.outcome(leftover=False) is None


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=80),
            st.sampled_from(
                [
                    b"[DONE]",
                    b"{}",
                    b"[]",
                    b"null",
                    b'{"choices": 3}',
                    b'{"choices": [null]}',
                    b'{"choices": [{"delta": 1}]}',
                    b'{"usage": {"completion_tokens": -1}}',
                    b'{"choices": [{"delta": {"content": "a"}}], "usage": "x"}',
                    b'{"error": null}',
                ]
            ),
        ),
        max_size=20,
    )
)
def test_stream_state_takes_any_payloads(payloads: list[bytes]) -> None:
    for chat in (True, False):
        state = StreamState(chat=chat)
        for i, payload in enumerate(payloads):
            state.feed(payload, i)
        state.outcome(leftover=False)


async def test_llamacpp_timings_are_kept_beside_the_client_figures() -> None:
    usage = event(
        {
            "choices": [],
            "usage": {"completion_tokens": 2, "prompt_tokens": 33},
            "timings": {
                "cache_n": 5,
                "prompt_n": 33,
                "prompt_ms": 223.311,
                "predicted_n": 2,
                "predicted_ms": 19.5,
            },
        }
    )
    body = SSE_HEAD + ROLE + delta("a") + delta("b", "length") + usage + DONE + END
    async with canned(fixed(body)) as server:
        (rec,) = await send(server.url)
    assert rec.error is None
    assert (rec.server_prefill_us, rec.server_decode_us, rec.cached_tokens) == (223311, 19500, 5)
    from loadbench.metrics import StageAccumulator

    acc = StageAccumulator(open_loop=False)
    acc.add(rec)
    fig = acc.finish()
    assert fig.latency_ms["server_prefill"].count == 1
    assert fig.latency_ms["server_decode"].max == pytest.approx(19.5, rel=0.01)
    assert "ttft_outside_prefill" in fig.latency_ms


def test_absurd_timings_are_ignored() -> None:
    state = StreamState(chat=True)
    state.feed(b'{"choices":[],"timings":{"prompt_ms":-1,"predicted_ms":"x","cache_n":true}}', 1)
    assert state.server == (None, None, None)


async def test_a_server_that_closes_after_each_stream_is_not_reused() -> None:
    """llama.cpp's server announces keep-alive but closes after every streamed response."""
    body = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
        b"keep-alive: timeout=5, max=100\r\n\r\n" + delta("a", "stop") + DONE + END
    )
    async with canned(fixed(body), close_after=True) as server:
        records = await send(server.url, n=6)
    assert [r.error for r in records] == [None] * 6
    assert len(server.requests) == 6  # the server saw each request once


def test_usage_is_read_alike_streamed_or_whole() -> None:
    """One reader for ``usage``: the token counts and the prompt cache's share
    (``prompt_tokens_details.cached_tokens``), from an event or a whole completion."""
    from loadbench.http.stream import read_completion

    usage = {
        "prompt_tokens": 40,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 32},
    }
    streamed = StreamState(True)
    streamed.feed(orjson.dumps({"choices": [], "usage": usage}), 1)
    whole = StreamState(True)
    body = {"choices": [{"message": {"content": "a b c"}}], "usage": usage}
    assert read_completion(orjson.dumps(body), whole, 1) is None
    for state in (streamed, whole):
        assert (state.prompt_tokens, state.completion_tokens, state.cached_tokens) == (40, 3, 32)
