"""Raw socket reads of an SSE response in, each event's payload and stamp out, in one step.

Why its own module: under real-time pacing every token is its own network read, and each
read went through seven Python calls (the protocol, the pump's sink, the chunked decoder
and its inner loop, the client's callback, the SSE decoder, the stream state). On a cold
cache, with a wake-up between every two events, call layers cost more than the work they
do. The commonest read of all, one whole HTTP chunk holding one whole ``data: {...}``
event with LF line ends (llama.cpp, vLLM, SGLang and Ollama all send these; Foundry Local's
oatpp server too, with each chunk's closing CRLF sent ahead of the next one), is handled
here in one function: size line checked, event located, payload handed to the stream
state. Anything else (a read that is not exactly one chunk, CR line ends, comments, other
fields, the first read after the head, the end of the body) goes through ``BodyDecoder``
and ``SSEDecoder`` as before, and the tests check that both paths agree under arbitrary
splits of the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter_ns

from loadbench.http.h1 import HEXDIGITS, BodyDecoder
from loadbench.http.sse import SSEDecoder

__all__ = ["EventReader"]


class EventReader:
    """One response body: ``read`` takes each raw read (inside the protocol's
    ``data_received``: it never raises, a failure is kept in ``failure``), ``body`` takes
    bytes already stripped of their framing (the rest of the head's read, a TLS stream's
    pieces). ``feed(payload, now_ns)`` gets each event, stamped when its read arrived.
    ``decoder``: the body's framing, for ``read``; without one, only ``body`` is used."""

    __slots__ = ("_decoder", "_fast", "_feed", "_sse", "failure")

    def __init__(
        self, feed: Callable[[bytes, int], None], decoder: BodyDecoder | None = None
    ) -> None:
        self._decoder = decoder
        self._sse = SSEDecoder()
        self._feed = feed
        # Both decoders sit at a boundary with nothing held back: a read may take the fast
        # path; the value is the CRLF still due before the next chunk (0 or 2, see
        # ``BodyDecoder.crlf_due``). None until the general path has seen the first event
        # (a BOM is decided), and whenever something is held back.
        self._fast: int | None = None
        self.failure: Exception | None = None

    def read(self, data: bytes) -> bool:
        """A raw read; True when the body is complete or failed (the pump stops)."""
        now = perf_counter_ns()
        due = self._fast
        if due is not None:
            # Exactly one chunk holding one `data: PAYLOAD\n\n` event with no other line
            # end: `SIZE\r\n` + event + `\r\n` (most servers), or `\r\n` + `SIZE\r\n` +
            # event when the previous chunk's CRLF comes first (oatpp). Its payload is a
            # slice; the decoders are left where they were, which is where they would be.
            n = len(data)
            if due:
                whole, start, end = data.startswith(b"\r\n"), 2, n
            else:
                whole, start, end = data.endswith(b"\r\n"), 0, n - 2
            eol = data.find(b"\r\n", start)
            if (
                whole
                and start < eol < start + 9
                and data.startswith(b"data: ", eol + 2)
                and data.endswith(b"\n\n", 0, end)
                and not data[start:eol].translate(None, HEXDIGITS)
                and int(data[start:eol], 16) == end - eol - 2
                and data.find(b"\n", eol + 8, end - 2) < 0
                and data.find(b"\r", eol + 2, end) < 0
            ):
                try:
                    self._feed(data[eol + 8 : end - 2], now)
                except Exception as exc:  # a fault in feed: end the body, raise it in the task
                    self.failure = exc
                    return True
                return False
        decoder = self._decoder
        assert decoder is not None, "read() needs the body's decoder"
        try:
            pieces = decoder.feed(data)
            if pieces:
                self._events(pieces[0] if len(pieces) == 1 else b"".join(pieces), now)
        except Exception as exc:  # FramingError, or a fault in feed
            self.failure = exc
            return True
        self._fast = decoder.crlf_due if self._sse.clean else None
        return decoder.done

    def body(self, data: bytes) -> None:
        """Body bytes without framing; may raise (it runs in the task, not the protocol)."""
        self._events(data, perf_counter_ns())
        decoder = self._decoder
        self._fast = decoder.crlf_due if decoder is not None and self._sse.clean else None

    def _events(self, data: bytes, now: int) -> None:
        feed = self._feed
        for payload in self._sse.feed(data):
            feed(payload, now)

    def close(self) -> bool:
        """End of the body: True when bytes of an unfinished event were left over."""
        return self._sse.close()
