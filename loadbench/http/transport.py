"""A lean HTTP/1.1 transport for httpx, for load generation over http:// and https://.

httpx stays the API; this replaces httpcore's connection pool on the hot path. Measured
on this project's machine (../shared/research/client-limits.md): one shared AsyncClient
over httpcore falls from 19k to 361 SSE events/s as concurrency goes from 1 to 256,
because the pool's bookkeeping is O(N²) per request; over a transport like this one
(an O(1) LIFO list of idle connections, chunked bodies decoded by hand) httpx reads
over 100k events/s per core. It does HTTP/1.1 over its own asyncio protocol, with TLS for
https:// (ALPN offers http/1.1 only); HTTP/2 and proxies stay on httpx's own transport
(``client.make_transport`` picks, ``--transport httpx`` forces it).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from time import perf_counter_ns

import anyio
import anyio.abc
import httpx
from anyio.streams.tls import TLSStream

from loadbench.http.events import EventReader
from loadbench.http.h1 import (
    MAX_HEAD_BYTES,
    BodyDecoder,
    FramingError,
    ResponseHead,
    parse_head,
    render_request,
)
from loadbench.http.sockets import addresses, ssl_reason
from loadbench.http.tcp import READ_SIZE, TCPStream, open_tcp


class MalformedResponse(httpx.RemoteProtocolError):
    """The server answered with bytes that are not HTTP/1.1 (not a hang-up)."""


Origin = tuple[str, str, int]  # scheme, host, port
# An open connection (TLS or not) and the TCP stream under it, which says whether the
# server closed it while idle.
Conn = tuple[anyio.abc.ByteStream, "TCPStream"]


def tls_context(verify: bool) -> ssl.SSLContext:
    """httpx's own client TLS context (certifi's roots, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``
    for a private CA), offering only HTTP/1.1; ``verify=False`` (``--insecure``) checks
    neither chain nor host name. It reads the whole CA bundle (~20 ms): built once."""
    context = httpx.create_ssl_context(verify=verify, trust_env=True)
    context.set_alpn_protocols(["http/1.1"])
    return context


class LeanTransport(httpx.AsyncBaseTransport):
    """One idle list per origin; connections are reused LIFO, never shared. ``verify``
    (https:// only), as in httpx: a context, or a flag for ``tls_context`` at first use.
    ``fresh``: a new connection per request, none kept; ``quickack`` (Linux): TCP_QUICKACK
    after each read and write, so a server's Nagle never waits for our delayed ACK."""

    def __init__(
        self, *, verify: bool | ssl.SSLContext = True, fresh: bool = False, quickack: bool = False
    ) -> None:
        self._verify, self._fresh, self._quickack = verify, fresh, quickack
        self._idle: dict[Origin, list[Conn]] = {}
        # Origins that closed a kept-alive connection before answering on it: some servers
        # (llama.cpp's cpp-httplib) close after every streamed response while announcing
        # keep-alive. Their connections are not reused again.
        self._no_reuse: set[Origin] = set()
        self.stale_reuses = 0  # requests resent after such a close; reported in the result

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.send(request, None)

    async def send(self, request: httpx.Request, connects: list[int] | None) -> httpx.Response:
        """``handle_async_request``, with ``connects`` as for ``exchange``."""
        head, body = await self.exchange(
            origin(request.url), render(request, await request.aread()), request, connects
        )
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    async def exchange(
        self,
        key: Origin,
        payload: bytes,
        request: httpx.Request,
        connects: list[int] | None,
    ) -> tuple[ResponseHead, Body]:
        """Sends ``payload`` (``request`` rendered: ``render``) to ``key`` and reads the
        head: a load generator sends the same bytes many times, so they are rendered once,
        and no ``httpx.Response`` is built (~40 µs each on the project's machine). When it
        opened a connection (TCP connect and TLS handshake), how long that took in ns is
        appended to ``connects``: a cost the request paid before its first byte went out,
        reported apart from its TTFT. ``request`` names the request in errors."""
        idle = self._idle.setdefault(key, [])
        method = request.method.encode()
        conn, reused = await self._acquire(idle, key, request, connects)
        stream = conn[0]
        buf = b""
        heard = False  # any byte at all, an interim (1xx) response included
        try:
            await stream.send(payload)
            while True:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    head = parse_head(buf[:end], method=method)
                    rest = buf[end + 4 :]
                    if head.status < 200:  # 100 Continue and friends: the final head may
                        buf = rest  # be in the same read already, so parse before reading
                        continue
                    break
                if len(buf) > MAX_HEAD_BYTES:
                    raise FramingError("response head larger than 64 KiB")
                buf += await stream.receive(READ_SIZE)
                heard = True
        except BaseException as exc:
            await anyio.aclose_forcefully(stream)
            if isinstance(exc, anyio.EndOfStream) and reused and not heard:
                # A clean close, before a byte, of a connection we reused: the server had
                # closed it after its last response (the FIN was still in flight). Resend
                # once on a fresh connection, count it, and stop reusing for this origin.
                # A reset is never resent: the request may have reached the server.
                self._no_reuse.add(key)
                self.stale_reuses += 1
                return await self.exchange(key, payload, request, connects)
            if isinstance(exc, anyio.EndOfStream | anyio.BrokenResourceError | OSError):
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=request
                ) from exc
            if isinstance(exc, FramingError):
                raise MalformedResponse(str(exc), request=request) from exc
            raise
        decoder = BodyDecoder(head.framing, head.content_length)
        try:  # body bytes that came in the head's read are framed like any others
            first = decoder.feed(rest) if rest else []
        except FramingError as exc:
            await anyio.aclose_forcefully(stream)
            raise MalformedResponse(str(exc), request=request) from exc
        keep = idle if head.keep_alive and not self._fresh else None
        return head, Body(conn, decoder, first, keep, request)

    async def _acquire(
        self,
        idle: list[Conn],
        key: Origin,
        request: httpx.Request,
        connects: list[int] | None,
    ) -> tuple[Conn, bool]:
        """The most recent idle connection the server has not closed (and whether it was
        reused), else a new one. Checking before sending, as httpcore does, leaves only
        the race with a close already in flight."""
        while idle and key not in self._no_reuse:
            conn = idle.pop()
            if not conn[1].closed_by_server():
                if conn[1].unused and connects is not None:  # opened before the stage:
                    connects.append(-1)  # its first request is as fresh as a new one's
                conn[1].unused = False
                return conn, True
            await anyio.aclose_forcefully(conn[0])
        while idle:
            await anyio.aclose_forcefully(idle.pop()[0])
        started = perf_counter_ns()
        conn = await self._connect(key, request)
        if connects is not None:
            connects.append(perf_counter_ns() - started)
        return conn, False

    async def preconnect(self, url: httpx.URL, n: int) -> int:
        """Opens connections to ``url``'s origin at once until ``n`` are idle; returns how
        many it opened. One that fails is left for a request to fail on, as it would anyway;
        an origin whose connections are not reused gets none."""
        key = origin(url)
        if key in self._no_reuse or self._fresh:
            return 0
        idle = self._idle.setdefault(key, [])
        for conn in [conn for conn in idle if conn[1].closed_by_server()]:
            idle.remove(conn)
            await anyio.aclose_forcefully(conn[0])
        request = httpx.Request("GET", url)  # only for the text of a ConnectError
        before = len(idle)  # nothing else runs before a stage: idle only grows here

        async def one() -> None:
            with contextlib.suppress(httpx.ConnectError):
                idle.append(await self._connect(key, request))
                idle[-1][1].unused = True

        async with anyio.create_task_group() as tg:
            for _ in range(n - before):
                tg.start_soon(one)
        return len(idle) - before

    async def _connect(self, key: Origin, request: httpx.Request) -> Conn:
        """A new connection; any failure to set it up, TLS handshake included, is a
        ``ConnectError`` (refused, unreachable, DNS, untrusted or mismatched certificate)."""
        scheme, host, port = key
        try:
            stream = await open_tcp(await addresses(host, port), port)
            stream.quickack = self._quickack
            if scheme == "http":
                return stream, stream
            if not isinstance(self._verify, ssl.SSLContext):
                self._verify = tls_context(self._verify)
            # Not standard-compatible: no closing handshake (a closed stream is aborted
            # anyway), and a hang-up without close_notify reads as EOF, as a plain FIN does.
            # The hostname is the SNI and the name the certificate must carry.
            try:
                tls = await TLSStream.wrap(
                    stream, hostname=host, ssl_context=self._verify, standard_compatible=False
                )
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise
            return tls, stream
        except ssl.SSLError as exc:
            raise httpx.ConnectError(
                f"TLS handshake with {host}:{port} failed: {ssl_reason(exc)}", request=request
            ) from exc
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise httpx.ConnectError(
                f"cannot connect to {host}:{port}: {reason}", request=request
            ) from exc
        except (anyio.EndOfStream, anyio.BrokenResourceError) as exc:
            # Only the handshake can end this way: the server hung up or reset mid-way
            # (a plain-HTTP server on this port, a TLS terminator that rejected us).
            raise httpx.ConnectError(
                f"TLS handshake with {host}:{port} failed: the server closed the connection",
                request=request,
            ) from exc

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for stream, _ in idle:
                await anyio.aclose_forcefully(stream)
        self._idle.clear()


def origin(url: httpx.URL) -> Origin:
    """Where a request goes: the key of its idle list."""
    scheme = url.scheme
    if scheme == "http":
        return (scheme, url.host, url.port or 80)
    if scheme == "https":
        return (scheme, url.host, url.port or 443)
    raise httpx.UnsupportedProtocol(f"the lean transport speaks http(s), not {scheme}")


def render(request: httpx.Request, content: bytes) -> bytes:
    """A request's bytes on the wire; ``content`` is its body, read."""
    return render_request(
        request.method.encode(), request.url.raw_path, request.headers.raw, content
    )


class Body(httpx.AsyncByteStream):
    """The response body; gives its connection back only when the body was read to the end."""

    def __init__(
        self,
        conn: Conn,
        decoder: BodyDecoder,
        first: list[bytes],
        idle: list[Conn] | None,
        request: httpx.Request,
    ) -> None:
        self._conn = conn
        self._stream: anyio.abc.ByteStream | None = conn[0]
        self._decoder = decoder
        self._first = first
        self._idle = idle
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # One piece per network read, never one per HTTP chunk: events that arrived
        # together get one stamp, and each yield costs three async-generator layers.
        if self._first:
            yield b"".join(self._first)
        self._first = []
        decoder = self._decoder
        stream = self._stream
        if stream is None:
            return
        receive = stream.receive
        while not decoder.done:
            try:
                data = await receive(READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
                self._ended(exc)
                return
            try:
                pieces = decoder.feed(data)
            except FramingError as exc:
                raise MalformedResponse(str(exc), request=self._request) from exc
            if pieces:
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)

    @property
    def pumpable(self) -> bool:
        """Plain TCP on the lean transport: ``pump`` can read in ``data_received``."""
        return isinstance(self._stream, TCPStream)

    @property
    def decoder(self) -> BodyDecoder:
        """The body's framing, for an ``EventReader`` that reads it raw."""
        return self._decoder

    async def pump(self, reader: EventReader) -> None:
        """Each read to ``reader.read`` as it arrives, inside the protocol's
        ``data_received`` (the raw reference client's shape: no task wake-up, no async
        generator per read); ``reader`` was built on this body's ``decoder``. Raises what
        iterating would raise."""
        stream = self._stream
        assert isinstance(stream, TCPStream)
        decoder = self._decoder
        if self._first:
            first, self._first = self._first, []
            reader.body(b"".join(first))
        while not decoder.done:
            await stream.pump(reader.read)
            failure = reader.failure
            if failure is not None:
                if isinstance(failure, FramingError):
                    raise MalformedResponse(str(failure), request=self._request) from failure
                raise failure
            if not decoder.done and stream.ended:
                self._ended(stream.error)
                return

    def _ended(self, cause: BaseException | None) -> None:
        """The connection ended before the body did: complete for a body that runs until
        the close, else the server hung up mid-body."""
        if not self._decoder.eof():
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body",
                request=self._request,
            ) from cause

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        if self._decoder.done and self._idle is not None:
            self._idle.append(self._conn)
        else:
            await anyio.aclose_forcefully(stream)
