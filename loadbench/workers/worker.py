"""A worker: the same anyio engine, driven by messages instead of a command line.

``python -m loadbench.workers.worker`` reads framed messages on stdin and writes them on
stdout (see ``wire``); a Ray actor runs the same :func:`serve` over Ray calls. The worker
never decides anything about the run: it runs the shard it is given at the start time it
is given, reports every heartbeat, and stops sending load as soon as its driver is gone
(end of stdin, or no message within the lease) or tells it to stop.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from time import perf_counter_ns
from typing import Any, BinaryIO

import anyio
import anyio.to_thread

from loadbench import __version__
from loadbench.http import LoadClient
from loadbench.records import RequestRecord
from loadbench.run import RunState, StagePlan, run_stages
from loadbench.scenario import Api, RequestSpec
from loadbench.workers.wire import (
    HEADER_BYTES,
    PROTOCOL,
    ShardResult,
    frame,
    plan_from_dict,
    unframe_length,
)

__all__ = ["Arrivals", "Inbox", "Outbox", "refusal", "serve"]

Inbox = Callable[[], Awaitable[dict[str, Any] | None]]  # None: the driver is gone
Outbox = Callable[[dict[str, Any]], Awaitable[None]]
# When the last message from the driver arrived (time.monotonic()), stamped where it
# arrives (the pipe's reading thread, the actor's mailbox): a worker whose own loop is
# saturated by its load must not take its late reading for its driver's silence.
Arrivals = Callable[[], float]


def refusal(hello: dict[str, Any]) -> str | None:
    """Why this worker cannot serve that driver, worded for the person at the driver."""
    theirs, protocol = hello.get("version"), hello.get("protocol")
    if theirs != __version__ or protocol != PROTOCOL:
        return (
            f"loadbench version mismatch: the driver runs {theirs} (protocol {protocol}), "
            f"worker on {socket.gethostname()} runs {__version__} (protocol {PROTOCOL}); "
            f"install the same loadbench everywhere"
        )
    return None


class _Window:
    """The measured window and busy time of one shard, as the accumulator counts them,
    kept on the wall clock so that the driver can lay several workers' windows together."""

    def __init__(self) -> None:
        self.wall_minus_perf_ns = time.time_ns() - perf_counter_ns()
        self.first_due_ns: int | None = None
        self.last_end_ns: int | None = None
        self.busy_ns = 0

    def __call__(self, plan: StagePlan, rec: RequestRecord) -> None:
        if rec.warmup:
            return
        due = min(rec.due_ns, rec.sent_ns)
        if self.first_due_ns is None or due < self.first_due_ns:
            self.first_due_ns = due
        if self.last_end_ns is None or rec.end_ns > self.last_end_ns:
            self.last_end_ns = rec.end_ns
        self.busy_ns += max(rec.end_ns - rec.sent_ns, 0)

    def wall(self, perf_ns: int | None) -> int | None:
        return None if perf_ns is None else perf_ns + self.wall_minus_perf_ns


class _Session:
    def __init__(
        self, hello: dict[str, Any], client: LoadClient, send: Outbox, arrivals: Arrivals
    ) -> None:
        self.rank = int(hello["worker"])
        self.prompts: tuple[str, ...] = tuple(hello["prompts"])
        self.slo = [(str(m), float(p), int(limit)) for m, p, limit in hello["slo"]]
        self.max_error_rate: float | None = hello["max_error_rate"]
        self.served_as: str | None = hello.get("served_as")
        self.heartbeat_s = float(hello["heartbeat_s"])
        self.lease_s = float(hello["lease_s"])
        self.client = client
        self.send = send
        self.arrivals = arrivals
        self.stage: int | None = None
        self.state: RunState | None = None
        self.scope: anyio.CancelScope | None = None

    async def heartbeat(self) -> None:
        """Counters every heartbeat: the driver's proof of life, and its last snapshot."""
        while True:
            await anyio.sleep(self.heartbeat_s)
            live = self.state.live if self.state is not None else None
            counters = {"sent": 0, "ok": 0, "failed": 0, "warmup": 0}
            if live is not None:
                acc = live.accumulator
                counters = {
                    "sent": acc.sent,
                    "ok": acc.ok,
                    "failed": acc.failed,
                    "warmup": live.warmup_done,
                }
            await self.send({"type": "progress", "stage": self.stage, **counters})

    async def lease(self, stop: anyio.CancelScope) -> None:
        """No word from the driver within the lease: it is gone or stuck; stop the load."""
        while True:
            await anyio.sleep(self.lease_s / 4)
            if time.monotonic() - self.arrivals() > self.lease_s:
                stop.cancel()
                return

    async def run_stage(self, msg: dict[str, Any]) -> None:
        index = int(msg["index"])
        start_wall_ns = int(msg["start_wall_ns"])
        self.stage = index
        if msg["plan"] is None:
            await self.send({"type": "result", "stage": index, "part": None})
            return
        plan = plan_from_dict(msg["plan"])
        state = self.state = RunState()
        stale0 = self.client.stale_reuses
        window = _Window()
        skew_ms: float | None = None
        with anyio.CancelScope() as scope:
            self.scope = scope
            await anyio.sleep(max(start_wall_ns - time.time_ns(), 0) / 1e9)
            skew_ms = round((time.time_ns() - start_wall_ns) / 1e6, 3)
            await run_stages(
                [plan],
                self.prompts,
                self.client,
                state,
                slo=self.slo,
                max_error_rate=self.max_error_rate,
                on_record=window,
                served_as=self.served_as,
            )
        self.scope = None
        if scope.cancelled_caught:
            state.close_partial()
        part = None
        if state.stages:
            part = ShardResult(
                worker=self.rank,
                result=state.stages[-1],
                first_due_wall_ns=window.wall(window.first_due_ns),
                last_end_wall_ns=window.wall(window.last_end_ns),
                busy_ns=window.busy_ns,
                start_skew_ms=skew_ms,
                stale_reuses=self.client.stale_reuses - stale0,
                # The engine's own per-prompt fold of this stage, sent for the driver to merge.
                prompts=state.prompt_fold.histograms if state.prompt_fold is not None else None,
            ).to_dict()
        self.state = None
        await self.send({"type": "result", "stage": index, "part": part})


async def serve(receive: Inbox, send: Outbox, arrivals: Arrivals) -> int:
    """One driver's session, hello to bye; returns the exit status for a process worker.

    Load runs only inside the session's task group, which ends (cancelling every request
    in flight) at ``bye``, at the end of the driver's stream, or when the lease runs out.
    """
    hello = await receive()
    if hello is None:
        return 0
    problem = refusal(hello) if hello.get("type") == "hello" else "expected hello first"
    if problem is not None:
        await send({"type": "refused", "reason": problem, "version": __version__})
        return 2
    c = hello["client"]
    request = c["request"]
    async with LoadClient(
        base_url=c["base_url"],
        api=Api(c["api"]),
        spec=RequestSpec(
            max_tokens=int(request["max_tokens"]),
            temperature=request["temperature"],
            stream=bool(request["stream"]),
            extra=request["extra"],
        ),
        timeout_s=float(c["timeout_s"]),
        max_connections=int(c["max_connections"]),
        api_key=c["api_key"],
        verify=bool(c["verify"]),
        transport=str(c["transport"]),
        connections=str(c.get("connections", "reuse")),
        quickack=bool(c.get("quickack", False)),
    ) as client:
        session = _Session(hello, client, send, arrivals)
        await send(
            {
                "type": "ready",
                "version": __version__,
                "protocol": PROTOCOL,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "python": platform.python_version(),
                "wall_ns": time.time_ns(),
            }
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.heartbeat)
            tg.start_soon(session.lease, tg.cancel_scope)
            while (msg := await receive()) is not None:
                kind = msg.get("type")
                if kind == "bye":
                    break
                if kind == "ping":
                    await send({"type": "pong", "seq": msg.get("seq"), "wall_ns": time.time_ns()})
                elif kind == "stage":
                    tg.start_soon(session.run_stage, msg)
                elif kind == "stop" and session.scope is not None:
                    session.scope.cancel()
            tg.cancel_scope.cancel()
    return 0


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _pipes() -> tuple[Inbox, Outbox, Arrivals]:
    """Framed messages over stdin and a private copy of stdout; fd 1 then points at stderr,
    so a stray print from any library cannot corrupt the stream."""
    import orjson

    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    lock = anyio.Lock()
    arrived = [time.monotonic()]
    # Threads of their own: the load must not be able to keep the pipes waiting for one.
    limiters: list[anyio.CapacityLimiter] = []

    def limiter() -> anyio.CapacityLimiter:
        if not limiters:
            limiters.append(anyio.CapacityLimiter(2))
        return limiters[0]

    def read() -> dict[str, Any] | None:
        header = _read_exactly(stdin, HEADER_BYTES)
        if header is None:
            return None
        body = _read_exactly(stdin, unframe_length(header))
        if body is None:
            return None
        arrived[0] = time.monotonic()
        msg = orjson.loads(body)
        return msg if isinstance(msg, dict) else None

    async def receive() -> dict[str, Any] | None:
        # A blocking read in a thread works alike on every platform's pipes.
        return await anyio.to_thread.run_sync(read, abandon_on_cancel=True, limiter=limiter())

    async def send(msg: dict[str, Any]) -> None:
        data = frame(msg)
        async with lock:
            await anyio.to_thread.run_sync(out.write, data, limiter=limiter())

    return receive, send, lambda: arrived[0]


def _backend_options() -> dict[str, Any]:
    """uvloop where the driver would use it (the same rule as ``cli.runner``)."""
    if sys.platform == "win32" or os.environ.get("LOADBENCH_LOOP") == "asyncio":
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def main() -> None:
    # A terminal's Ctrl-C reaches the whole process group; the driver decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    receive, send, arrivals = _pipes()

    async def session() -> int:
        return await serve(receive, send, arrivals)

    status = anyio.run(session, backend_options=_backend_options())
    sys.stderr.flush()
    # A thread may still sit in a read of stdin from a silent driver: do not wait for it.
    os._exit(status)


if __name__ == "__main__":
    main()
