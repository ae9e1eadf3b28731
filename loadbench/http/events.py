"""Raw socket reads of an SSE response in, each event's payload and stamp out, in one step.

Why its own module: under real-time pacing every token is its own network read, and each
read went through seven Python calls (the protocol, the pump's sink, the chunked decoder
and its inner loop, the client's callback, the SSE decoder, the stream state). On a cold
cache, with a wake-up between every two events, call layers cost more than the work they
do. The commonest read of all, one whole HTTP chunk holding one whole ``data: {...}``
event with LF line ends (llama.cpp, vLLM, SGLang and Ollama all send these), is handled
here in one function: size line checked, event located, payload handed to the stream
state. Anything else (a read that is not exactly one chunk, CR line ends, comments, other
fields, the first read after the head, the end of the body) goes through ``BodyDecoder``
and ``SSEDecoder`` as before, and the tests check that both paths agree under arbitrary
splits of the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter_ns

from loadbench.http.h1 import BodyDecoder
from loadbench.http.sse import SSEDecoder

__all__ = ["EventReader"]

_HEXDIGITS = b"0123456789abcdefABCDEF"


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
        # path. False until the general path has seen the first event (a BOM is decided).
        self._fast = False
        self.failure: Exception | None = None

    def read(self, data: bytes) -> bool:
        """A raw read; True when the body is complete or failed (the pump stops)."""
        now = perf_counter_ns()
        if self._fast:
            # Exactly one chunk, `SIZE\r\n` + `data: PAYLOAD\n\n` + `\r\n`, with no other
            # line end inside the event: its payload is a slice.
            eol = data.find(b"\r\n")
            n = len(data)
            if (
                0 < eol < 9
                and data.startswith(b"data: ", eol + 2)
                and data.endswith(b"\n\n\r\n")
                and not data[:eol].translate(None, _HEXDIGITS)
                and int(data[:eol], 16) == n - eol - 4
                and data.find(b"\n", eol + 8, n - 4) < 0
                and data.find(b"\r", eol + 2, n - 2) < 0
            ):
                try:
                    self._feed(data[eol + 8 : n - 4], now)
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
        self._fast = self._sse.clean and decoder.at_boundary
        return decoder.done

    def body(self, data: bytes) -> None:
        """Body bytes without framing; may raise (it runs in the task, not the protocol)."""
        self._events(data, perf_counter_ns())
        self._fast = self._sse.clean and self._decoder is not None and self._decoder.at_boundary

    def _events(self, data: bytes, now: int) -> None:
        feed = self._feed
        for payload in self._sse.feed(data):
            feed(payload, now)

    def close(self) -> bool:
        """End of the body: True when bytes of an unfinished event were left over."""
        return self._sse.close()
