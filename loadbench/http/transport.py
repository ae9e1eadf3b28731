"""A lean HTTP/1.1 transport for httpx, for load generation over http:// and https://.

httpx stays the API; this replaces httpcore's connection pool on the hot path. Measured
on this project's machine (../shared/research/client-limits.md): one shared AsyncClient
over httpcore falls from 19k to 361 SSE events/s as concurrency goes from 1 to 256,
because the pool's bookkeeping is O(N²) per request; over a transport like this one
(an O(1) LIFO list of idle connections, chunked bodies decoded by hand) httpx reads
over 100k events/s per core. It does HTTP/1.1 over TCP (a bare non-blocking connect to an
IP literal, ``anyio.connect_tcp`` for a name), with TLS for
https:// (ALPN offers http/1.1 only); HTTP/2 and proxies stay on httpx's own transport
(``client.make_transport`` picks, ``--transport httpx`` forces it).
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from time import perf_counter_ns

import anyio
import anyio.abc
import httpx
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.tls import TLSStream

from loadbench.http.h1 import MAX_HEAD_BYTES, BodyDecoder, FramingError, parse_head

_READ_SIZE = 65536


class MalformedResponse(httpx.RemoteProtocolError):
    """The server answered with bytes that are not HTTP/1.1 (not a hang-up)."""


Origin = tuple[str, str, int]  # scheme, host, port
# An open connection and the socket under it, looked up once: anyio's ``extra()`` builds a
# dict of every socket attribute per call (~4 µs), too much to pay at each reuse.
Conn = tuple[anyio.abc.ByteStream, socket.socket | None]


def tls_context(verify: bool) -> ssl.SSLContext:
    """The client TLS context httpx's own transport would use, offering only HTTP/1.1.

    Built by ``httpx.create_ssl_context``, so both transports trust the same roots: certifi's
    bundle, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set (a private CA). ``verify=False``
    (``--insecure``) checks neither the chain nor the host name. Building one reads the
    whole CA bundle (~20 ms), so it is built once per transport, before the first request.
    """
    context = httpx.create_ssl_context(verify=verify, trust_env=True)
    context.set_alpn_protocols(["http/1.1"])
    return context


class LeanTransport(httpx.AsyncBaseTransport):
    """One idle list per origin; connections are reused LIFO, never shared.

    ``verify`` is for https:// origins, as in httpx: a context to use as given, or a flag
    for ``tls_context``, which is then built at the first https:// connection.
    """

    def __init__(self, *, verify: bool | ssl.SSLContext = True) -> None:
        self._verify = verify
        self._idle: dict[Origin, list[Conn]] = {}
        # Per origin, the address family of an IP-literal host (connected to directly), or
        # None for a name (resolved at each connect, by anyio's happy eyeballs).
        self._families: dict[Origin, int | None] = {}
        # Origins that closed a kept-alive connection before answering on it: some servers
        # (llama.cpp's cpp-httplib) close after every streamed response while announcing
        # keep-alive. Their connections are not reused again.
        self._no_reuse: set[Origin] = set()
        self.stale_reuses = 0  # requests resent after such a close; reported in the result

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.send(request, None)

    async def send(self, request: httpx.Request, connects: list[int] | None) -> httpx.Response:
        """``handle_async_request``, and when it opened a connection (TCP connect and TLS
        handshake), how long that took in ns is appended to ``connects``: a cost the
        request paid before its first byte went out, reported apart from its TTFT."""
        key = _origin(request.url)
        idle = self._idle.setdefault(key, [])
        payload = _render(request, await request.aread())
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
                buf += await stream.receive(_READ_SIZE)
                heard = True
        except anyio.EndOfStream as exc:
            await anyio.aclose_forcefully(stream)
            if reused and not heard:
                # A clean close, before a byte, of a connection we reused: the server had
                # closed it after its last response (the FIN was still in flight). Resend
                # once on a fresh connection, count it, and stop reusing for this origin.
                self._no_reuse.add(key)
                self.stale_reuses += 1
                return await self.send(request, connects)
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from exc
        except (anyio.BrokenResourceError, OSError) as exc:
            # A reset is never resent: the request may have reached the server.
            await anyio.aclose_forcefully(stream)
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from exc
        except FramingError as exc:
            await anyio.aclose_forcefully(stream)
            raise MalformedResponse(str(exc), request=request) from exc
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
        decoder = BodyDecoder(head.framing, head.content_length)
        try:  # body bytes that came in the head's read are framed like any others
            first = decoder.feed(rest) if rest else []
        except FramingError as exc:
            await anyio.aclose_forcefully(stream)
            raise MalformedResponse(str(exc), request=request) from exc
        body = _Body(conn, decoder, first, idle if head.keep_alive else None, request)
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

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
            if not _closed_by_server(conn[1]):
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
        """Opens connections to ``url``'s origin, all at once, until ``n`` are idle there;
        returns how many it opened. A stage calls it before its measured window, so that
        its first wave measures the server rather than this client's connect loop. A
        connection that fails here is left for a request to fail on, as it would anyway;
        an origin whose connections are not reused gets none."""
        key = _origin(url)
        if key in self._no_reuse:
            return 0
        idle = self._idle.setdefault(key, [])
        for conn in [conn for conn in idle if _closed_by_server(conn[1])]:
            idle.remove(conn)
            await anyio.aclose_forcefully(conn[0])
        request = httpx.Request("GET", url)  # only for the text of a ConnectError
        opened = 0

        async def one() -> None:
            nonlocal opened
            try:
                idle.append(await self._connect(key, request))
            except httpx.ConnectError:
                return
            opened += 1

        async with anyio.create_task_group() as tg:
            for _ in range(n - len(idle)):
                tg.start_soon(one)
        return opened

    async def _connect(self, key: Origin, request: httpx.Request) -> Conn:
        """A new connection and its socket; any failure to set it up, TLS handshake
        included, is a ``ConnectError`` (refused, unreachable, DNS, untrusted or mismatched
        certificate)."""
        scheme, host, port = key
        family = self._families.get(key, -1)
        if family == -1:
            family = self._families[key] = _ip_family(host)
        try:
            if family is None:
                stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port)
                try:
                    sock: socket.socket | None = stream.extra(SocketAttribute.raw_socket)
                except anyio.TypedAttributeLookupError:
                    sock = None
            else:
                stream, sock = await _connect_ip(family, host, port)
            if scheme == "http":
                return stream, sock
            if not isinstance(self._verify, ssl.SSLContext):
                self._verify = tls_context(self._verify)
            # Not standard-compatible: no closing handshake on close (a closed stream is
            # aborted anyway), and a peer that hangs up without close_notify reads as EOF,
            # as a plain FIN does, rather than as a broken stream.
            try:
                tls = await TLSStream.wrap(
                    stream,
                    hostname=host,  # SNI and the name the certificate must carry
                    ssl_context=self._verify,
                    standard_compatible=False,
                )
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise
            return tls, sock
        except ssl.SSLError as exc:
            raise httpx.ConnectError(
                f"TLS handshake with {host}:{port} failed: {_ssl_reason(exc)}", request=request
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


def _origin(url: httpx.URL) -> Origin:
    scheme = url.scheme
    if scheme == "http":
        return (scheme, url.host, url.port or 80)
    if scheme == "https":
        return (scheme, url.host, url.port or 443)
    raise httpx.UnsupportedProtocol(f"the lean transport speaks http(s), not {scheme}")


def _ip_family(host: str) -> int | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


async def _connect_ip(family: int, host: str, port: int) -> tuple[SocketStream, socket.socket]:
    """A TCP connection to an IP literal, without ``anyio.connect_tcp``'s happy-eyeballs
    task group, event and timeout scope per connect: about half its CPU per connection,
    which is what a stage opening 256 connections at once waits for."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect((host, port))
        except BlockingIOError:
            await anyio.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err)) from None
        return await SocketStream.from_socket(sock), sock
    except BaseException:
        sock.close()
        raise


def _ssl_reason(exc: ssl.SSLError) -> str:
    """OpenSSL's reason without the file/line noise: "certificate verify failed: ..."."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    return exc.reason or exc.strerror or str(exc)


def _closed_by_server(sock: socket.socket | None) -> bool:
    """An idle connection with anything to read was closed by the server (EOF or RST).

    For TLS the raw socket underneath is checked: a close_notify alert also makes it
    readable, and so does anything else unexpected from an idle server. Either way the
    connection is not reused. A stream without a socket underneath is never reused.
    """
    if sock is None:
        return True
    try:
        if sys.platform == "win32" or not hasattr(select, "poll"):
            return bool(select.select([sock], [], [], 0)[0])
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _render(request: httpx.Request, body: bytes) -> bytes:
    head = [request.method.encode(), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        head += (name, b": ", value, b"\r\n")
    head.append(b"\r\n")
    return b"".join(head) + body


class _Body(httpx.AsyncByteStream):
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
                data = await receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
                if decoder.eof():
                    return
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body",
                    request=self._request,
                ) from exc
            try:
                pieces = decoder.feed(data)
            except FramingError as exc:
                raise MalformedResponse(str(exc), request=self._request) from exc
            if pieces:
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        if self._decoder.done and self._idle is not None:
            self._idle.append(self._conn)
        else:
            await anyio.aclose_forcefully(stream)
