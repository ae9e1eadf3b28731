"""One plain TCP connection as anyio's byte stream, over an asyncio protocol of its own.

Apart from the transport because it is the layer under it: how a socket is opened (a bare
non-blocking connect), read (always, pausing only when over ``READ_SIZE`` bytes wait) and
handed to a body being pumped (each read given to it inside ``data_received``). The
transport decides what goes over it; this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from loadbench.http.sockets import readable

__all__ = ["QUICKACK", "READ_SIZE", "TCPStream", "open_tcp"]

READ_SIZE = 65536
QUICKACK = getattr(socket, "TCP_QUICKACK", 12)  # Linux only; the scenario checks the OS


async def open_tcp(addresses: Sequence[tuple[int, str]], port: int) -> TCPStream:
    """The first of ``addresses`` that accepts, else the last error. A bare non-blocking
    connect: ``anyio.connect_tcp``'s happy-eyeballs task group, event and scope per connect
    cost twice the CPU, which a stage opening 256 connections at once waits for."""
    error: OSError = OSError(f"no address for port {port}")
    for family, host in addresses:
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
            stream = TCPStream(sock)
            await asyncio.get_running_loop().create_connection(lambda: stream, sock=sock)  # noqa: B023
            return stream
        except BaseException as exc:
            sock.close()
            if not isinstance(exc, OSError):
                raise
            error = exc
    raise error


class TCPStream(anyio.abc.ByteStream, asyncio.Protocol):
    """anyio's byte stream over an asyncio protocol that keeps reading, pausing only when
    over ``READ_SIZE`` bytes wait: anyio's own resumes and pauses reading around every
    receive, two epoll_ctl calls per SSE event, ~23% of the CPU under real-time pacing."""

    unused = False  # opened ahead (preconnect) and not yet given to a request
    quickack = False  # TCPQUICKACK after each read and write: it is not sticky

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._transport = cast(asyncio.Transport, None)  # set by connection_made, at once
        # While a body is pumped (``Body.pump``): each read goes straight to this, inside
        # data_received, with no buffering and no task wake-up per read.
        self._sink: Callable[[bytes], bool] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None  # set while writing is paused
        self._eof = self._lost = self._closed = False
        self._error: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.quickack:
            self._sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        sink = self._sink
        if sink is not None:
            if sink(data):  # the body is complete, or failed: wake the pump
                self._sink = None
                self._wake()
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > READ_SIZE:
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # half-open: aclose closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self, max_bytes: int = READ_SIZE) -> bytes:
        """All that has arrived, as one piece: events that came together get one stamp."""
        chunks = self._chunks
        while not chunks:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._lost or self._eof:
                if self._error is not None:
                    raise anyio.BrokenResourceError from self._error
                raise anyio.EndOfStream
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._take()
        if len(data) > max_bytes:
            chunks.append(data[max_bytes:])
            self._buffered = len(data) - max_bytes
            data = data[:max_bytes]
        return data

    def _take(self) -> bytes:
        """All that is buffered, as one piece; reading resumes if it had been paused."""
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        was_full = self._buffered > READ_SIZE
        self._buffered = 0
        if was_full and not self._transport.is_closing():
            self._transport.resume_reading()
        return data

    async def pump(self, sink: Callable[[bytes], bool]) -> None:
        """Hands what is buffered, then every read as it arrives, to ``sink`` (inside
        ``data_received``) until it returns True or the connection ends; one wake-up per
        body instead of one per read. The sink must not raise."""
        if self._chunks and sink(self._take()):
            return
        if self._closed or self._lost or self._eof:
            return
        self._sink = sink
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter  # woken when the sink is done, or at EOF or a lost connection
        finally:
            self._waiter = None
            self._sink = None

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def ended(self) -> bool:
        """The server closed (EOF, reset), the connection was lost or closed here."""
        return self._eof or self._lost or self._closed

    async def send(self, item: bytes) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._lost or self._transport.is_closing():
            raise anyio.BrokenResourceError
        self._transport.write(item)
        if self.quickack:
            self._sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        if self._drained is not None:
            await self._drained

    async def send_eof(self) -> None:
        self._transport.write_eof()

    async def aclose(self) -> None:
        self._closed = True
        self._transport.abort()
        self.resume_writing()

    def closed_by_server(self) -> bool:
        """Anything received while idle (EOF, RST, close_notify): read already, or not."""
        return self._eof or self._lost or bool(self._chunks) or readable(self._sock)

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {SocketAttribute.raw_socket: lambda: self._sock}
