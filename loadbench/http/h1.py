"""Pure HTTP/1.1 response framing for the lean transport: head parsing and body decoding.

Kept apart from the socket code so it can be tested by value and by property. It parses
only what a load generator needs from a server's *responses*: the status line, headers and
a body framed by ``Transfer-Encoding: chunked``, ``Content-Length`` or connection close; and
it renders the requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

MAX_HEAD_BYTES = 64 * 1024
_CRLF = b"\r\n"
# A chunk size is these and nothing else (see _chunk_size); EventReader checks with them too.
HEXDIGITS = b"0123456789abcdefABCDEF"
# RFC 9112 7.1: chunk-size [ BWS ";" chunk-ext ]; blanks after the size are tolerated even
# without an extension (some servers pad the size), never before it.
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]+)[ \t]*(?:;.*)?")


class Framing(StrEnum):
    CHUNKED = "chunked"
    LENGTH = "length"
    CLOSE = "close"  # body runs until the server closes the connection
    NONE = "none"  # 1xx, 204, 304, or a response to HEAD


class FramingError(ValueError):
    """The server sent bytes that are not valid HTTP/1.1 framing."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    framing: Framing
    content_length: int
    keep_alive: bool


def parse_head(block: bytes, *, method: bytes = b"POST") -> ResponseHead:
    """Parse a status line and headers (``block`` excludes the final blank line)."""
    lines = block.split(b"\r\n")
    status_line = lines[0]
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise FramingError(f"bad status line {status_line[:80]!r}")
    status = int(parts[1])
    reason = parts[2] if len(parts) == 3 else b""
    headers: list[tuple[bytes, bytes]] = []
    chunked = False
    length = -1
    close = parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise FramingError(f"bad header line {line[:80]!r}")
        value = value.strip()
        headers.append((name, value))
        lname = name.lower()
        if lname == b"transfer-encoding":
            chunked = value.lower().endswith(b"chunked")
        elif lname == b"content-length":
            if not value.isdigit():
                raise FramingError(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif lname == b"connection":
            token = value.lower()
            if token == b"close":
                close = True
            elif token == b"keep-alive":
                close = False
    if status < 200 or status in (204, 304) or method == b"HEAD":
        framing = Framing.NONE
    elif chunked:
        framing = Framing.CHUNKED
    elif length >= 0:
        framing = Framing.LENGTH
    else:
        framing = Framing.CLOSE
        close = True
    return ResponseHead(status, reason, headers, framing, max(length, 0), not close)


class BodyDecoder:
    """Turns raw socket reads into body bytes. ``feed`` returns the body pieces in order.

    For chunked bodies it strips the framing without copying payload bytes more than once
    per read; a server that sends one SSE event per chunk (all of them) costs one slice.
    Trailers after the last chunk are skipped. ``done`` turns true at the end of the body;
    bytes after it (which a non-pipelining client never expects) are ignored.
    """

    __slots__ = ("_buf", "_framing", "_remaining", "_trailers", "done")

    def __init__(self, framing: Framing, content_length: int = 0) -> None:
        self._framing = framing
        self._buf = b""
        # LENGTH: body bytes left. CHUNKED: bytes left of the current chunk's data + CRLF.
        self._remaining = content_length if framing is Framing.LENGTH else 0
        self._trailers = False
        self.done = framing is Framing.NONE or (framing is Framing.LENGTH and content_length == 0)

    def feed(self, data: bytes) -> list[bytes]:
        if self.done or not data:
            return []
        framing = self._framing
        if framing is Framing.CLOSE:
            return [data]
        if framing is Framing.LENGTH:
            if len(data) >= self._remaining:
                data = data[: self._remaining]
                self.done = True
            self._remaining -= len(data)
            return [data]
        return self._feed_chunked(self._buf + data if self._buf else data)

    def _feed_chunked(self, buf: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        rem = self._remaining
        find = buf.find
        while pos < n:
            if rem > 2:  # inside a chunk's data that did not arrive whole
                take = min(rem - 2, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                rem -= take
                continue
            if rem:  # the CRLF that must close a chunk's data, perhaps split across reads
                got = buf[pos : pos + rem]
                if not _CRLF[2 - rem :].startswith(got):
                    raise FramingError(_missized(got))
                pos += len(got)
                rem -= len(got)
                continue
            eol = find(b"\r\n", pos)
            if eol < 0:
                if n - pos > 1024:
                    raise FramingError("chunk size line too long")
                break
            if self._trailers:  # after the last chunk: trailer lines, then an empty line
                empty = eol == pos
                pos = eol + 2
                if empty:
                    self.done = True
                    break
                continue
            line = buf[pos:eol]
            if line and not line.translate(None, HEXDIGITS):
                size = int(line, 16)  # the common line: hex digits, no extension
            else:
                size = _chunk_size(line)
            pos = eol + 2
            if size == 0:
                self._trailers = True
                continue
            end = pos + size
            if end + 2 <= n:  # the whole chunk is here (the usual case): one slice
                if not buf.startswith(_CRLF, end):
                    raise FramingError(_missized(buf[end : end + 2]))
                out.append(buf[pos:end])
                pos = end + 2
            else:
                rem = size + 2
        self._remaining = rem
        self._buf = buf[pos:] if pos < n and not self.done else b""
        return out

    @property
    def crlf_due(self) -> int | None:
        """Chunked with nothing held back: 0 between two chunks; 2 when all that is due is
        the CRLF closing the last chunk's data (oatpp, Foundry Local's server, writes it
        with the next chunk's size line); None otherwise. ``EventReader``'s fast path
        reads the next chunk whole from either place."""
        if self._framing is not Framing.CHUNKED or self._buf or self._trailers or self.done:
            return None
        return self._remaining if self._remaining in (0, 2) else None

    def eof(self) -> bool:
        """The connection closed: returns whether the body was complete."""
        if self._framing is Framing.CLOSE:
            self.done = True
        return self.done


def render_request(
    method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """A request's bytes: request line, headers as given, blank line, body."""
    head = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        head += (name, b": ", value, b"\r\n")
    head.append(b"\r\n")
    return b"".join(head) + body


def _chunk_size(line: bytes) -> int:
    """A chunk size line with an extension (``1a;name=value``) or blanks after the size.

    The size itself is hex digits only: ``int(x, 16)`` alone would also take ``0x``, ``+``,
    ``_`` and leading blanks, and a size read leniently is a body decoded wrongly.
    """
    match = _SIZE_LINE.fullmatch(line)
    if match is None:
        raise FramingError(f"bad chunk size {line[:20]!r}")
    return int(match[1], 16)


def _missized(got: bytes) -> str:
    return f"a chunk's data does not end where its size line says (expected CRLF, got {got!r})"
