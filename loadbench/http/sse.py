"""Incremental Server-Sent-Events decoder: raw body bytes in, ``data`` payloads out.

Follows the WHATWG HTML "event stream" interpretation rules, restricted to what a load
tester needs: only the ``data`` field is kept (``event``, ``id``, ``retry``, unknown
fields and ``:`` comments are skipped), and payloads stay bytes for ``orjson.loads``.

Why not ``httpx.Response.aiter_lines()``: it splits on everything ``str.splitlines``
treats as a line end (U+2028, U+0085, form feed, ...), which occurs inside JSON strings
and corrupts them. SSE lines end in CRLF, LF or CR, and only those.

This runs once per network read, at up to ~100k events/s on one core, so the common shapes
take short paths: a read holding exactly one ``data: {json}`` event (LF or CRLF) is a few
checks and one slice; several complete events are one ``split(b"\\n\\n")`` and a slice
each. Everything else (CR line ends, events cut across reads, comments, other fields,
multi-line data) takes the general path: line ends normalised to LF, then a line parser.
The tests check that every path agrees with a plain reading of the spec under arbitrary
chunk splits.
"""

from __future__ import annotations

_BOM = b"\xef\xbb\xbf"


class SSEDecoder:
    """Decodes one response body; feed it every chunk in order, then call :meth:`close`.

    Internally, line ends are normalised to LF as chunks arrive. A CR that ends a chunk
    ends its line at once (so a CR-only stream dispatches without waiting for the next
    read); if the next chunk then starts with LF, that LF is dropped as the second half
    of a CRLF. Bytes after the last event boundary are kept as a list of pieces and joined
    only when a boundary arrives, so an event spread over many reads costs linear time.
    Invalid UTF-8 is passed through untouched (the spec would substitute U+FFFD; the JSON
    parser downstream reports it instead).
    """

    __slots__ = ("_clean", "_head", "_pending", "_skip_lf")

    def __init__(self) -> None:
        # Bytes of a possible BOM still undecided at stream start; None once decided.
        self._head: bytes | None = b""
        # LF-normalised bytes since the last event boundary, not yet parsed.
        self._pending: list[bytes] = []
        # The previous chunk ended in CR: a leading LF in the next one is part of that CRLF.
        self._skip_lf = False
        # At an event boundary with nothing held back: the next chunk may take the short path.
        self._clean = False

    def feed(self, data: bytes) -> list[bytes]:
        """Return the payloads of the events this chunk completes, in order.

        An event's data lines are joined with ``b"\\n"``; ``data`` with an empty value
        yields ``b""``; an event without a ``data`` field yields nothing.
        """
        if self._clean:
            # The commonest read of all: exactly one `data: ...` line and a blank line,
            # with LF (most servers) or CRLF (sse-starlette) line ends.
            if 13 not in data:  # 13 is CR; `int in bytes` is a plain memchr
                end = data.find(b"\n")
                if end == len(data) - 2 and data[-1] == 10 and data[:6] == b"data: ":
                    return [data[6:end]]
            else:
                end = data.find(b"\r")
                if (
                    end == len(data) - 4
                    and data[end:] == b"\r\n\r\n"
                    and data.find(b"\n") == end + 1
                    and data[:6] == b"data: "
                ):
                    return [data[6:end]]
                data = self._normalise(data)
        else:
            data = self._normalise(data)
        pending = self._pending
        if pending:
            # No event can end unless this chunk holds a blank line or completes one.
            if b"\n\n" not in data and not (data[:1] == b"\n" and pending[-1][-1:] == b"\n"):
                if data:
                    pending.append(data)
                return []
            pending.append(data)
            data = b"".join(pending)
            pending.clear()
        events = data.split(b"\n\n")
        rest = events.pop()
        if rest:
            pending.append(rest)
        self._clean = not rest and not self._skip_lf and self._head is None
        out: list[bytes] = []
        for event in events:
            if event[:6] == b"data: " and 10 not in event:
                out.append(event[6:])
            elif event[:5] == b"data:" and 10 not in event:
                out.append(event[5:])  # no space to remove: the branch above took those
            elif event:
                _parse_block(event, out)
        return out

    @property
    def clean(self) -> bool:
        """At an event boundary, nothing held back, the BOM decided, no CR pending: the
        next bytes start a new event (``EventReader``'s fast path may take them)."""
        return self._clean

    def _normalise(self, data: bytes) -> bytes:
        """Strip a stream-start BOM and turn CRLF and CR line ends into LF."""
        if self._head is not None:
            data = self._head + data
            if len(data) < 3 and _BOM.startswith(data):
                self._head = data  # could still become a BOM: wait for more bytes
                return b""
            self._head = None
            if data.startswith(_BOM):
                data = data[3:]
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if 13 in data:
            self._skip_lf = data[-1] == 13
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data

    def close(self) -> bool:
        """End of stream: True when bytes of an unfinished event were left over.

        "Unfinished" means anything other than line ends after the last blank line: a
        partial line, or complete lines (data, other fields or comments) never followed
        by the blank line that dispatches them. Per the spec these are discarded. A
        trailing lone CR is a complete (blank) line, not a leftover. The decoder is reset
        and may be reused for another stream.
        """
        leftover = b"".join(self._pending)
        if self._head:
            leftover = self._head + leftover
        self._head = b""
        self._pending = []
        self._skip_lf = False
        self._clean = False
        return bool(leftover.strip(b"\n"))


def _parse_block(block: bytes, out: list[bytes]) -> None:
    """The general path: parse LF-separated lines, appending each dispatched payload.

    ``block`` never contains CR; it may hold blank lines (each one dispatches).
    """
    data: list[bytes] | None = None
    for line in block.split(b"\n"):
        if not line:
            if data is not None:
                out.append(b"\n".join(data))
                data = None
            continue
        if not line.startswith(b"data"):
            continue  # comments and every other field
        rest = line[4:]
        if not rest:
            value = b""  # "data" without a colon: the field with an empty value
        elif rest[:1] == b":":
            value = rest[2:] if rest[1:2] == b" " else rest[1:]
        else:
            continue  # a longer field name, such as "dataset"
        if data is None:
            data = [value]
        else:
            data.append(value)
    if data is not None:
        out.append(b"\n".join(data))
