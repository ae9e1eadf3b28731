"""One token event's bytes through each per-read path, in a hot loop: where the per-event
CPU goes, without sockets, wake-ups or a server.

    .venv/bin/python benchmarks/micro_events.py

Prints ns per event for: the raw reference client's ``data_received`` (chunk framing, SSE
split, orjson, a stamp), loadbench's ``EventReader.read`` (the path every token read takes),
and the general path it falls back to (``BodyDecoder`` then ``SSEDecoder`` then
``StreamState.feed``), then the general path's parts. A hot loop flatters every path (warm
caches, no wake-up between events); under real-time pacing the differences grow. Best of 3.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
from refclient import Exchange
from refserver import token_event

from loadbench.http.events import EventReader
from loadbench.http.h1 import BodyDecoder, Framing
from loadbench.http.sse import SSEDecoder
from loadbench.http.stream import StreamState

EVENT = token_event(b"bench-model", False, 3453454723043)
N = 100_000


def best_ns(run: Callable[[], None], clear: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for i in range(N):
            run()
            if i % 1000 == 999:
                clear()
        best = min(best, (time.perf_counter_ns() - t0) / N)
    return best


def main() -> None:
    raw = Exchange(False)
    raw.in_body = True
    state = StreamState(True)
    reader = EventReader(state.feed, BodyDecoder(Framing.CHUNKED))
    reader.read(EVENT)  # the first read decides the BOM; later ones take the fast path
    decoder, sse, state2 = BodyDecoder(Framing.CHUNKED), SSEDecoder(), StreamState(True)

    def general() -> None:
        now = time.perf_counter_ns()
        for payload in sse.feed(b"".join(decoder.feed(EVENT))):
            state2.feed(payload, now)

    body = decoder.feed(EVENT)[0]
    payload = sse.feed(body)[0]
    rows = {
        "raw client data_received": best_ns(lambda: raw.data_received(EVENT), raw.token_ns.clear),
        "loadbench EventReader.read": best_ns(lambda: reader.read(EVENT), state.token_ns.clear),
        "general path (decoders + state)": best_ns(general, state2.token_ns.clear),
        "  chunked decoder": best_ns(lambda: decoder.feed(EVENT), lambda: None),
        "  SSE decoder": best_ns(lambda: sse.feed(body), lambda: None),
        "  StreamState.feed": best_ns(lambda: state2.feed(payload, 1), state2.token_ns.clear),
        "  of which orjson.loads": best_ns(lambda: orjson.loads(payload), lambda: None),
    }
    for name, ns in rows.items():
        print(f"{name:<34} {ns:>8.0f} ns")


if __name__ == "__main__":
    main()
