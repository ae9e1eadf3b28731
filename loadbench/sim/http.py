"""The HTTP/1.1 the simulator speaks: reading requests, writing responses, ending connections.

It is hand-written over anyio's byte streams: keep-alive and ``Content-Length`` request
bodies, nothing else. A framework would cost more per token than the client under test and
hide when bytes actually leave. Kept apart from ``simserver`` so the simulated model reads
as scheduling and timing, not as wire format.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
from dataclasses import dataclass
from enum import StrEnum

import anyio
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteStream

from loadbench.sim.faults import BadRequest

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
CLIENT_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    411: b"Length Required",
    413: b"Content Too Large",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
)
JSON = b"application/json"


@dataclass(frozen=True, slots=True)
class Request:
    method: bytes
    path: bytes
    body: bytes
    keep_alive: bool


def response_bytes(
    status: int, body: bytes, *, keep_alive: bool, extra: bytes = b"", content_type: bytes = JSON
) -> bytes:
    reason = _REASONS.get(status, b"Unknown")
    head = b"HTTP/1.1 %d %s\r\ncontent-type: %b\r\ncontent-length: %d\r\n" % (
        status,
        reason,
        content_type,
        len(body),
    )
    return head + (b"" if keep_alive else b"connection: close\r\n") + extra + b"\r\n" + body


async def read_request(conn: BufferedByteStream) -> Request | None:
    """The next request on the connection, or None when the client closed it between requests."""
    try:
        head = await conn.receive_until(b"\r\n\r\n", MAX_HEAD_BYTES)
    except anyio.IncompleteRead:
        return None
    except anyio.DelimiterNotFound:
        raise BadRequest("request head too large") from None
    lines = head.lstrip(b"\r\n").split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise BadRequest("malformed request line")
    method, target, version = parts
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise BadRequest("malformed header line")
        headers[name.lower()] = value.strip()
    connection = headers.get(b"connection", b"").lower()
    keep_alive = b"close" not in connection and (
        version != b"HTTP/1.0" or b"keep-alive" in connection
    )
    if headers.get(b"expect", b"").lower() == b"100-continue":
        await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits 1 s for this otherwise
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        raise BadRequest("chunked request bodies are not supported; send Content-Length", 411)
    length = headers.get(b"content-length", b"0")
    if not length.isdigit():
        raise BadRequest("invalid Content-Length")
    if int(length) > MAX_BODY_BYTES:
        raise BadRequest("request body too large", 413)
    try:
        body = await conn.receive_exactly(int(length)) if int(length) else b""
    except anyio.IncompleteRead:
        return None
    path = target.partition(b"?")[0]
    return Request(method, path, body, keep_alive)


class Next(StrEnum):
    """What becomes of a connection after a response."""

    KEEP = "keep"
    CLOSE = "close"  # graceful: FIN after the last byte, then wait for the client's
    ABORT = "abort"  # at once: a dropped stream or a client already gone


def keep_or_close(keep_alive: bool) -> Next:
    return Next.KEEP if keep_alive else Next.CLOSE


def arm_reset(conn: BufferedByteStream) -> None:
    """Makes the coming close send RST instead of FIN: SO_LINGER on, with a zero timeout.

    Where the option is refused or the raw socket is out of reach, the close stays a FIN,
    which a client sees the same way: closed before any response.
    """
    linger = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)
    with contextlib.suppress(OSError, LookupError, AttributeError, TypeError):
        raw = conn.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)


async def lingering_close(conn: BufferedByteStream) -> None:
    """Closes gracefully, like a web server's lingering close.

    anyio's ``aclose()`` aborts the transport: bytes still queued would be lost, and
    unread input (a body after a bad head) makes the kernel send RST, which can destroy
    the response at the client. So: FIN after the last byte, then read until the client
    closes too, for at most a second.
    """
    with contextlib.suppress(*CLIENT_GONE), anyio.move_on_after(1.0):
        await conn.send_eof()
        while await conn.receive():
            pass
