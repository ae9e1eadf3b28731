"""The lean transport over https://: real TLS on 127.0.0.1, with a throwaway CA (trustme).

The CA is trusted the way a user trusts a private one, through ``SSL_CERT_FILE`` (read by
httpx's context builder, which both transports use). Servers are the project's simulator
behind anyio's TLS listener, or canned TLS servers that close connections in set ways.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
import trustme
from anyio.streams.tls import TLSListener, TLSStream

from loadbench.http.client import LoadClient, make_transport
from loadbench.http.transport import LeanTransport
from loadbench.records import RequestRecord
from loadbench.scenario.model import Api
from loadbench.sim.server import SimConfig
from loadbench.sim.simulator import Simulator as _Simulator
from tests.test_client import DONE, END, ROLE, SPEC, SSE_HEAD, _read_request, delta

pytestmark = pytest.mark.anyio

FAST = SimConfig(ttft_ms=5, itl_ms=1, slots=256, seed=1, batch_itl_factor=0)
BODY = SSE_HEAD + ROLE + delta("a") + delta("b", "stop") + DONE + END


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(context)
    return context


@pytest.fixture
def trusted(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test CA is the only root the client trusts."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture
def untrusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default roots (certifi's bundle), which do not hold the test CA."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


class _QuietTLSListener(TLSListener):
    """A failed handshake is an expected outcome here, not a server error to log."""

    @staticmethod
    async def handle_handshake_error(exc: BaseException, stream: anyio.abc.AnyByteStream) -> None:
        await anyio.aclose_forcefully(stream)
        if not isinstance(exc, Exception):
            raise exc


class Server:
    def __init__(self, port: int) -> None:
        self.url = f"https://127.0.0.1:{port}/v1"
        self.accepts = 0  # connections whose handshake completed
        self.answered = 0


@asynccontextmanager
async def tls_server(
    context: ssl.SSLContext, handle: Callable[[Server, TLSStream], Any]
) -> AsyncIterator[Server]:
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    server = Server(tcp.extra(anyio.abc.SocketAttribute.local_port))

    async def accepted(stream: TLSStream) -> None:
        server.accepts += 1
        await handle(server, stream)

    listener = _QuietTLSListener(tcp, context, standard_compatible=False, handshake_timeout=5)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, accepted)
        yield server
        tg.cancel_scope.cancel()


def tls_sim(context: ssl.SSLContext) -> Any:
    """loadbench's simulator, as ``serve`` runs it, behind anyio's TLS listener."""
    simulator = _Simulator(FAST)
    return tls_server(context, lambda _server, stream: simulator.handle(stream))


def canned(*, close: str, close_notify: bool) -> Callable[[Server, TLSStream], Any]:
    """Answers with BODY, then ``close="after_response"`` closes after each response, and
    ``close="on_next_request"`` reads the next request on the connection and closes
    without answering it (the stale reuse a keep-alive timeout makes)."""

    async def handle(server: Server, stream: TLSStream) -> None:
        answered = 0
        try:
            while await _read_request(stream) is not None:
                if answered and close == "on_next_request":
                    break
                answered += 1
                server.answered += 1
                await stream.send(BODY)
                if close == "after_response":
                    break
            if close_notify:  # sent at once; the client's reply it waits for never comes
                with anyio.move_on_after(0.5), contextlib.suppress(Exception):
                    await stream.unwrap()
        finally:
            await anyio.aclose_forcefully(stream)

    return handle


async def fetch(
    url: str,
    n: int = 1,
    *,
    verify: bool = True,
    transport: str = "auto",
    concurrent: bool = False,
    pause_s: float = 0.0,
) -> tuple[list[RequestRecord], int]:
    """``n`` requests, all at once or one after another (``pause_s`` apart); the records
    and the transport's stale reuses."""
    records: list[RequestRecord] = []
    async with LoadClient(
        base_url=url,
        api=Api.CHAT,
        spec=SPEC,
        timeout_s=5,
        max_connections=max(n, 1),
        verify=verify,
        transport=transport,
    ) as client:

        async def one(i: int) -> None:
            records.append(await client.execute(index=i, warmup=False, model="m", prompt="hi"))

        with anyio.fail_after(15):
            if concurrent:
                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        tg.start_soon(one, i)
            else:
                for i in range(n):
                    if i:
                        await anyio.sleep(pause_s)
                    await one(i)
        return records, client.stale_reuses


def test_auto_picks_the_lean_transport_for_https_too(trusted: None) -> None:
    def pick(url: str, kind: str) -> str:
        return type(make_transport(url, kind=kind, max_connections=4, verify=True)).__name__

    assert pick("https://example.test/v1", "auto") == "LeanTransport"
    assert pick("http://example.test/v1", "auto") == "LeanTransport"
    assert pick("https://example.test/v1", "httpx") == "AsyncHTTPTransport"


async def test_streams_over_https_and_reuses_the_connection(ca: trustme.CA, trusted: None) -> None:
    async with tls_sim(server_context(ca)) as server:
        records, stale = await fetch(server.url, n=4)
    assert [r.error for r in records] == [None] * 4
    for rec in records:
        assert rec.output_tokens == 4
        assert len(rec.token_ns) == 4
        assert rec.sent_ns < rec.token_ns[0] <= rec.token_ns[-1] <= rec.end_ns
    assert server.accepts == 1
    assert stale == 0


async def refused_then_insecure(context: ssl.SSLContext) -> None:
    """One request with verification (refused), two without (``--insecure``: ok)."""
    async with tls_sim(context) as server:
        (rec,), _ = await fetch(server.url)
        insecure, _ = await fetch(server.url, n=2, verify=False)
    assert rec.error == "connect_error"
    assert rec.detail is not None
    assert rec.detail.startswith("TLS handshake with 127.0.0.1:")
    assert "certificate verify failed" in rec.detail
    assert [r.error for r in insecure] == [None, None]
    assert server.accepts == 1  # the refused handshake never completed


async def test_a_certificate_from_an_unknown_ca_is_a_connect_error(
    ca: trustme.CA, untrusted: None
) -> None:
    await refused_then_insecure(server_context(ca))


async def test_a_certificate_for_another_name_is_a_connect_error(
    ca: trustme.CA, trusted: None
) -> None:
    await refused_then_insecure(server_context(ca, "example.test"))


@pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify", "bare-fin"])
async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    ca: trustme.CA, trusted: None, close_notify: bool
) -> None:
    """The idle check sees the raw socket under TLS: a close_notify or a FIN that arrived
    while the connection sat idle makes it readable, so a new one is opened instead.
    (A close still in flight when the next request goes out is the race that the resend
    below, or today's no_response class after a reset, covers, as for plain TCP.)"""
    handle = canned(close="after_response", close_notify=close_notify)
    async with tls_server(server_context(ca), handle) as server:
        records, stale = await fetch(server.url, n=4, pause_s=0.05)
    assert [r.error for r in records] == [None] * 4
    assert stale == 0
    assert server.answered == 4
    assert server.accepts == 4


@pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify", "bare-fin"])
async def test_a_reused_connection_closed_before_answering_is_resent_once(
    ca: trustme.CA, trusted: None, close_notify: bool
) -> None:
    handle = canned(close="on_next_request", close_notify=close_notify)
    async with tls_server(server_context(ca), handle) as server:
        records, stale = await fetch(server.url, n=3)
    assert [r.error for r in records] == [None] * 3
    assert stale == 1  # then the origin is not reused again
    assert server.answered == 3
    assert server.accepts == 3


async def _plain_http_answer(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        with contextlib.suppress(Exception):
            await stream.receive()
            await stream.send(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")


async def _hang_up(stream: anyio.abc.SocketStream) -> None:
    await anyio.aclose_forcefully(stream)


@pytest.mark.parametrize("handler", [_plain_http_answer, _hang_up], ids=["plain-http", "hang-up"])
async def test_a_server_that_does_not_speak_tls_is_a_connect_error(
    handler: Callable[[anyio.abc.SocketStream], Any],
) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        (rec,), _ = await fetch(f"https://127.0.0.1:{port}/v1", verify=False)
        tg.cancel_scope.cancel()
    assert rec.error == "connect_error"
    assert rec.detail is not None
    assert rec.detail.startswith(f"TLS handshake with 127.0.0.1:{port} failed")


async def test_two_hundred_concurrent_tls_streams(ca: trustme.CA, trusted: None) -> None:
    async with tls_sim(server_context(ca)) as server:
        records, _ = await fetch(server.url, n=200, concurrent=True)
    assert sum(r.ok for r in records) == 200
    assert sum(r.output_tokens for r in records) == 800
    assert server.accepts == 200


async def test_httpx_own_transport_trusts_the_same_roots(ca: trustme.CA, trusted: None) -> None:
    """``--transport httpx`` stays the escape hatch, with the same CA setup."""
    async with tls_sim(server_context(ca)) as server:
        records, _ = await fetch(server.url, n=2, transport="httpx")
    assert [r.error for r in records] == [None, None]
    assert server.accepts == 1


async def test_an_explicit_context_is_used_as_given(ca: trustme.CA, untrusted: None) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    transport = LeanTransport(verify=context)
    async with tls_sim(server_context(ca)) as server, httpx.AsyncClient(transport=transport) as c:
        response = await c.get(server.url.removesuffix("/v1") + "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
