"""Raw reference client for ``make bench``: the floor a Python load generator can reach.

``asyncio.Protocol`` (uvloop when importable), HTTP/1.1 and chunked decoding by hand, SSE
split on blank lines, ``orjson.loads`` per event, one ``perf_counter_ns`` per socket read,
a stamp appended per token. Closed loop: C keep-alive connections, one worker each.

It runs the same phases as ``lbclient.py`` drives loadbench's engine through, so their
figures compare: a warmup phase (``--warmup-s`` seconds, or ``--warmup-each`` requests per
worker), then the measured phase: workers (each first waiting a random ``0..--stagger-s``)
send back to back until ``--duration-s`` has passed since the phase began, then finish what
they have in flight. CPU (``time.process_time``) and wall time cover the measured phase;
events are the tokens of its completed requests. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import orjson
from stamps import StampedRequest, clock_offset_ns, reported, timing_errors

_loads = orjson.loads
_now = time.perf_counter_ns


class Exchange(asyncio.Protocol):
    """One keep-alive connection; parses each response as it arrives (no pipelining)."""

    def __init__(self, timing: bool) -> None:
        self.timing = timing
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[bool] | None = None
        self.reset()

    def reset(self) -> None:
        self.buf = b""
        self.in_body = False
        self.chunk_left = 0  # bytes left of the current chunk's data + its CRLF
        self.sse = b""
        self.finished = False
        self.token_ns: list[int] = []
        self.server_t: list[int] = []
        self.server_r = 0
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(False)

    def data_received(self, data: bytes) -> None:
        now = _now()
        buf = self.buf + data if self.buf else data
        pos = 0
        if not self.in_body:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            self.status = int(buf[9:12])
            pos = end + 4
            self.in_body = True
        # Chunked framing off, body pieces of this read joined: one SSE split per read.
        pieces: list[bytes] = []
        n = len(buf)
        left = self.chunk_left
        while pos < n:
            if left:
                take = min(left, n - pos)
                data_part = min(take, left - 2)
                if data_part > 0:
                    pieces.append(buf[pos : pos + data_part])
                pos += take
                left -= take
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(buf[pos:eol], 16)
            if size == 0:
                if n - eol < 4:  # the closing CRLF is still to come
                    break
                self.finished = True
                pos = n
                break
            pos = eol + 2
            left = size + 2
        self.chunk_left = left
        self.buf = buf[pos:] if pos < n else b""
        if pieces:
            body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            sse = self.sse + body if self.sse else body
            events = sse.split(b"\n\n")
            self.sse = events.pop()
            for event in events:
                if event[:6] != b"data: ":
                    continue
                payload = event[6:]
                if payload == b"[DONE]":
                    continue
                obj = _loads(payload)
                if obj["choices"]:
                    self.token_ns.append(now)
                    if self.timing:
                        self.server_t.append(obj["t"])
                        if "r" in obj:
                            self.server_r = obj["r"]
        if self.finished and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(True)


class Phase:
    """Counts and stamps of one phase."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.events = 0
        self.stamped: list[StampedRequest] = []


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
        b"accept: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
    )
    body = orjson.dumps(
        {
            "model": "bench-model",
            "max_tokens": args.tokens,
            "messages": [{"role": "user", "content": "Say hello."}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    wire = request % (args.host.encode(), args.port, len(body), body)

    def factory() -> Exchange:
        return Exchange(args.timing)

    async def connect() -> tuple[asyncio.Transport, Exchange]:
        return await loop.create_connection(factory, args.host, args.port)

    conns = [await connect() for _ in range(args.conc)]

    async def worker(i: int, phase: Phase, deadline: float, each: int, stagger: float) -> None:
        if stagger:
            await asyncio.sleep(random.random() * stagger)
        done = 0
        while (each and done < each) or (not each and loop.time() < deadline):
            done += 1
            transport, proto = conns[i]
            if proto.transport is None:
                transport, proto = conns[i] = await connect()
            proto.reset()
            proto.waiter = waiter = loop.create_future()
            sent = _now()
            transport.write(wire)
            ok = await waiter
            if not ok or proto.status != 200:
                phase.failed += 1
                continue
            phase.ok += 1
            phase.events += len(proto.token_ns)
            if args.timing:
                phase.stamped.append(
                    StampedRequest(sent, proto.token_ns, proto.server_r, proto.server_t)
                )

    async def run_phase(seconds: float, each: int, stagger: float) -> Phase:
        phase = Phase()
        deadline = loop.time() + seconds
        async with asyncio.TaskGroup() as tg:
            for i in range(args.conc):
                tg.create_task(worker(i, phase, deadline, each, stagger))
        return phase

    await run_phase(args.warmup_s, args.warmup_each, 0.0)
    cpu0, wall0, mono0 = time.process_time(), time.perf_counter_ns(), time.monotonic_ns()
    phase = await run_phase(args.duration_s, 0, args.stagger_s)
    cpu1, wall1 = time.process_time(), time.perf_counter_ns()
    for transport, _ in conns:
        transport.close()
    result: dict[str, Any] = {
        "client": "raw",
        "conc": args.conc,
        "tokens": args.tokens,
        "ok": phase.ok,
        "failed": phase.failed,
        "events": phase.events,
        "cpu_s": cpu1 - cpu0,
        "wall_s": (wall1 - wall0) / 1e9,
        "loop": type(loop).__module__.split(".")[0],
    }
    if args.timing:
        offset = clock_offset_ns()
        lo = wall0 + int(args.stagger_s * 1e9)
        hi = wall0 + int((args.duration_s - args.stagger_s) * 1e9)
        steady = [r for r in phase.stamped if lo <= r.sent_ns < hi]
        result["reported"] = reported(phase.stamped)
        result["paired"] = timing_errors(steady, offset)
        result["steady_mono_ns"] = [
            mono0 + int(args.stagger_s * 1e9),
            mono0 + int(args.duration_s * 1e9),
        ]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conc", type=int, default=64)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--warmup-each", type=int, default=0, help="requests per worker instead")
    p.add_argument("--duration-s", type=float, default=2.5)
    p.add_argument("--stagger-s", type=float, default=0.0)
    p.add_argument("--timing", action="store_true", help="keep and pair server stamps")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--max-s", type=int, default=120, help="hard limit for this process")
    args = p.parse_args()
    if hasattr(signal, "alarm"):
        signal.alarm(args.max_s)  # SIGALRM's default action ends the process
    runner: Callable[..., Any] = asyncio.run
    if not args.no_uvloop and sys.platform != "win32":
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            pass
    gc.collect()
    result = runner(run(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
