"""The driver: one run's stages spread over N workers, merged back into one result.

Per stage: cut the plan into shards (``shard``), send each worker its shard and one
shared start time (now + a margin above the measured round trips, converted to each
worker's clock), then wait for every part while watching heartbeats. A worker that ends,
answers nonsense or is silent for two heartbeats is *lost*: killed, kept in the report
with its last counters, never retried (a retried shard fires its load twice); the run is
*degraded* and the later stages are cut among the workers left. A cancellation (Ctrl-C)
stops every worker, waits briefly for their partial parts and keeps the merged stage,
marked interrupted, before the cancellation goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
from anyio.abc import TaskGroup

from loadbench import __version__
from loadbench.errors import LoadbenchError, UsageError
from loadbench.metrics import SloLimit
from loadbench.observe import ServerMonitor
from loadbench.run import StagePlan, StageResult
from loadbench.scenario import RequestSpec, Scenario
from loadbench.workers.fleet import Fleet, WorkerInfo
from loadbench.workers.links import Link, ProcessLink, start_process_link
from loadbench.workers.merge import merge_shards
from loadbench.workers.shard import shard_plan
from loadbench.workers.wire import PROTOCOL, ShardResult, plan_to_dict

__all__ = ["WorkerRefused", "run_stages_in_workers"]

HEARTBEAT_S = 2.0  # a saturated worker (loop lag ~0.6 s at c=256 on a bulk server) still beats
MIN_START_MARGIN_S = 0.1  # the shared start's lead over "now", at least
STOP_WAIT_S = 5.0  # after a stop, how long partial parts may take to come back
READY_TIMEOUT_S = 60.0  # imports, a client, and on Ray the actors' placement
_PINGS = 3


class WorkerRefused(UsageError):
    """A worker that will not serve this driver (another loadbench version)."""


def _hello(
    scenario: Scenario, plans: Sequence[StagePlan], base_url: str, **kw: Any
) -> dict[str, Any]:
    r = kw["request"] or scenario.request
    target = scenario.target
    return {
        "type": "hello",
        "version": __version__,
        "protocol": PROTOCOL,
        "client": {
            "base_url": base_url,
            "api": str(scenario.target.api),
            "request": {
                "max_tokens": r.max_tokens,
                "temperature": r.temperature,
                "stream": r.stream,
                "extra": dict(r.extra),
            },
            "timeout_s": scenario.target.timeout_s,
            "max_connections": max(p.max_streams for p in plans),
            "api_key": kw["api_key"],
            "verify": kw["verify"],
            "transport": kw["transport"],
            "connections": target.connections,
            "quickack": target.quickack,
        },
        "served_as": kw["served_as"],
        "prompts": list(scenario.prompts),
        "slo": [list(limit) for limit in kw["slo"]],
        "max_error_rate": scenario.load.max_error_rate,
        "heartbeat_s": kw["heartbeat_s"],
        "lease_s": 2 * kw["heartbeat_s"],
    }


class _Crew:
    """The links, one reader task each feeding one inbox, and what is known of each."""

    def __init__(
        self,
        links: Sequence[Link],
        fleet: Fleet,
        infos: Sequence[WorkerInfo],
        tg: TaskGroup,
        heartbeat_s: float,
    ):
        self.links = {link.rank: link for link in links}
        self.info = {w.rank: w for w in infos}
        self.fleet = fleet
        self.heartbeat_s = heartbeat_s
        self.heard = {rank: anyio.current_time() for rank in self.links}
        self._checked = anyio.current_time()
        self.send_box, self.inbox = anyio.create_memory_object_stream[
            tuple[int, dict[str, Any] | None]
        ](math.inf)
        self._readers: list[anyio.CancelScope] = []
        for link in links:
            tg.start_soon(self._read, link)
        tg.start_soon(self._ping)

    async def _read(self, link: Link) -> None:
        # Shielded: after a Ctrl-C the workers' partial parts must still come in. Ended by
        # ``close`` (or by the worker's end of stream).
        with anyio.CancelScope(shield=True) as scope:
            self._readers.append(scope)
            while True:
                msg = await link.receive()
                self.heard[link.rank] = anyio.current_time()
                with contextlib.suppress(anyio.ClosedResourceError):
                    self.send_box.send_nowait((link.rank, msg))
                if msg is None:
                    return

    def close(self) -> None:
        for scope in self._readers:
            scope.cancel()
        self.send_box.close()
        self.inbox.close()

    async def _ping(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_s / 2)
            for rank in self.alive():
                await self.links[rank].send({"type": "ping"})

    def alive(self) -> list[int]:
        return [r for r in self.links if self.info[r].status != "lost"]

    async def lose(self, rank: int, why: str, stage: str | None) -> None:
        info = self.info[rank]
        if info.status == "lost":
            return
        link = self.links[rank]
        await link.kill()
        if isinstance(link, ProcessLink) and why == "ended" and (text := link.exit_text()):
            why = text
        info.status, info.lost, info.lost_in = "lost", why, stage
        where = f" during {stage}" if stage else ""
        self.fleet.warnings.append(
            f"worker {rank} lost{where}: {why}; last counters {info.last}; not retried, "
            f"its part of the stage is missing"
        )

    async def next(self, timeout_s: float) -> tuple[int, dict[str, Any] | None] | None:
        with anyio.move_on_after(timeout_s):
            return await self.inbox.receive()
        return None

    def silent(self) -> list[int]:
        now = anyio.current_time()
        stalled = now - self._checked > self.heartbeat_s
        self._checked = now
        if stalled:  # our own loop was starved: the workers' messages wait unread, not late
            for rank in self.heard:
                self.heard[rank] = max(self.heard[rank], now - self.heartbeat_s)
            return []
        return [r for r in self.alive() if now - self.heard[r] > 2 * self.heartbeat_s]


async def _handshake(crew: _Crew, hello: dict[str, Any], timeout_s: float) -> None:
    """hello -> ready, then a few pings for the round trip and the clock offset."""
    for rank in crew.alive():
        await crew.links[rank].send({**hello, "worker": rank, "workers": len(crew.links)})
    sent: dict[tuple[int, int], int] = {}
    waiting = set(crew.alive())
    with anyio.move_on_after(timeout_s) as late:
        while waiting:
            got = await crew.next(crew.heartbeat_s)
            if got is None:
                continue
            rank, msg = got
            info = crew.info[rank]
            if msg is None:
                raise LoadbenchError(f"worker {rank} ended before it was ready")
            if msg["type"] == "refused":
                raise WorkerRefused(str(msg["reason"]))
            if msg["type"] == "ready":
                if msg.get("version") != __version__ or msg.get("protocol") != PROTOCOL:
                    raise WorkerRefused(
                        f"loadbench version mismatch: the driver runs {__version__}, worker "
                        f"{rank} on {msg.get('host')} runs {msg.get('version')}"
                    )
                info.status, info.host = "ready", msg.get("host")
                info.pid = msg.get("pid") if info.pid is None else info.pid
                for seq in range(_PINGS):
                    sent[(rank, seq)] = time.time_ns()
                    await crew.links[rank].send({"type": "ping", "seq": seq})
            elif msg["type"] == "pong" and (rank, msg.get("seq")) in sent:
                t0, t1 = sent[(rank, int(msg["seq"]))], time.time_ns()
                rtt_ms = (t1 - t0) / 1e6
                if info.rtt_ms is None or rtt_ms < info.rtt_ms:  # the tightest sample wins
                    info.rtt_ms = round(rtt_ms, 3)
                    offset = (int(msg["wall_ns"]) - (t0 + t1) / 2) / 1e6
                    # One host, one clock: an estimate there would only add its own noise.
                    same_host = info.host == socket.gethostname()
                    info.clock_offset_ms = 0.0 if same_host else round(offset, 3)
                if msg.get("seq") == _PINGS - 1:
                    waiting.discard(rank)
    if late.cancelled_caught:
        raise LoadbenchError(
            f"worker(s) {', '.join(map(str, sorted(waiting)))} not ready within {timeout_s:g} s"
        )


async def _stage(
    crew: _Crew,
    index: int,
    plan: StagePlan,
    server: ServerMonitor | None,
    on_parts: Callable[[StagePlan, list[ShardResult]], None] | None,
) -> StageResult | None:
    ranks = crew.alive()
    shards = dict(zip(ranks, shard_plan(plan, len(ranks)), strict=True))
    label = f"{plan.model} {plan.label}"
    rtt = max((crew.info[r].rtt_ms or 0.0) for r in ranks) / 1e3
    start_ns = time.time_ns() + int(max(MIN_START_MARGIN_S, 5 * rtt) * 1e9)
    for rank in ranks:
        offset_ns = int((crew.info[rank].clock_offset_ms or 0.0) * 1e6)
        shard = shards[rank]
        await crew.links[rank].send(
            {
                "type": "stage",
                "index": index,
                "plan": None if shard is None else plan_to_dict(shard),
                "start_wall_ns": start_ns + offset_ns,
            }
        )
    parts: dict[int, ShardResult] = {}
    pending = set(ranks)
    stopped = False

    async def collect(deadline_s: float) -> None:
        with anyio.move_on_after(deadline_s):
            while pending:
                for rank in crew.silent():
                    if rank in pending:
                        await crew.lose(rank, "no heartbeat for two periods", label)
                        pending.discard(rank)
                got = await crew.next(crew.heartbeat_s / 2)
                if got is None:
                    continue
                rank, msg = got
                if msg is None:
                    await crew.lose(rank, "ended", label)
                    pending.discard(rank)
                elif msg["type"] == "progress" and msg.get("stage") == index:
                    crew.info[rank].last = {
                        k: int(msg[k]) for k in ("sent", "ok", "failed", "warmup")
                    }
                elif msg["type"] == "result" and msg.get("stage") == index:
                    pending.discard(rank)
                    if msg["part"] is not None:
                        try:
                            parts[rank] = ShardResult.from_dict(msg["part"])
                        except (ValueError, KeyError, TypeError) as exc:
                            await crew.lose(rank, f"unreadable result: {exc}", label)

    async with anyio.create_task_group() as tg:
        if server is not None:
            tg.start_soon(server.sample)
        try:
            await collect(math.inf)
        except anyio.get_cancelled_exc_class():
            stopped = True
            with anyio.CancelScope(shield=True):
                for rank in pending:
                    await crew.links[rank].send({"type": "stop"})
                await collect(STOP_WAIT_S)
                for rank in list(pending):
                    await crew.lose(rank, f"no part within {STOP_WAIT_S:g} s of stop", label)
            raise
        finally:
            tg.cancel_scope.cancel()
            if parts and on_parts is not None:
                on_parts(plan, [parts[r] for r in sorted(parts)])
            if parts or stopped:
                _keep(crew, plan, parts, ranks, stopped, server)
    return crew.fleet.state.stages[-1] if parts else None


def _keep(
    crew: _Crew,
    plan: StagePlan,
    parts: dict[int, ShardResult],
    ranks: list[int],
    stopped: bool,
    server: ServerMonitor | None,
) -> None:
    """The merged stage into the run's state, and its per-worker facts into the fleet."""
    fleet = crew.fleet
    if not parts:
        return
    ordered = [parts[r] for r in sorted(parts)]
    result = merge_shards(plan, ordered, stopped=stopped)
    if server is not None:
        result = dataclasses.replace(result, server=server.finish(result.figures.output_tokens))
    fleet.state.stages.append(result)
    fleet.cut = stopped
    fleet.state.stale_reuses += sum(p.stale_reuses for p in ordered)
    label = f"{plan.model} {plan.label}"
    fleet.stages.append(
        {
            "model": plan.model,
            "label": plan.label,
            "workers": len(ranks),
            "lost": sorted(r for r in ranks if crew.info[r].lost_in == label),
            "per_worker": [
                {
                    "rank": p.worker,
                    "start_skew_ms": p.start_skew_ms,
                    "sent": p.result.figures.sent,
                    "ok": p.result.figures.ok,
                    "client": p.result.client.to_dict(),
                }
                for p in ordered
            ],
        }
    )


@contextlib.asynccontextmanager
async def _process_links(count: int, python: str) -> AsyncIterator[list[Link]]:
    links: list[Link] = []
    try:
        for rank in range(count):
            links.append(await start_process_link(rank, python))
        yield links
    finally:
        with anyio.CancelScope(shield=True):
            for link in links:
                with contextlib.suppress(Exception):
                    await link.send({"type": "bye"})
            for link in links:
                await link.close(timeout_s=3.0)


async def run_stages_in_workers(
    scenario: Scenario,
    plans: Sequence[StagePlan],
    base_url: str,
    fleet: Fleet,
    *,
    workers: int,
    api_key: str | None = None,
    verify: bool = True,
    transport: str = "auto",
    slo: Sequence[SloLimit] = (),
    on_stage_end: Callable[[StageResult], None] = lambda _: None,
    server: ServerMonitor | None = None,
    on_parts: Callable[[StagePlan, list[ShardResult]], None] | None = None,
    request: RequestSpec | None = None,
    served_as: str | None = None,
    ray: str | None = None,
    heartbeat_s: float = HEARTBEAT_S,
    python: str = sys.executable,
) -> Fleet:
    """``run_stages`` over ``workers`` processes (or Ray actors when ``ray`` is "auto" or
    a cluster address); merged stages land in ``fleet.state.stages`` as they finish.
    ``on_parts`` sees each stage's parts as the workers returned them, before the merge.
    ``request`` and ``served_as`` as the runner gives them per model (``run_stages``).

    :class:`WorkerRefused` (exit 2) when a worker runs another loadbench; with Ray,
    ``TargetUnreachable`` (exit 3) naming an address that does not answer. Losing workers
    raises nothing: read ``fleet.degraded``. A cancellation keeps the stage in progress,
    merged from the parts that came back, and propagates.
    """
    if workers < 1:
        raise UsageError(f"--workers: expected at least 1, got {workers}")
    hello = _hello(
        scenario,
        plans,
        base_url,
        api_key=api_key,
        verify=verify,
        transport=transport,
        slo=slo,
        heartbeat_s=heartbeat_s,
        request=request,
        served_as=served_as,
    )
    # One session per call (the runner calls once per model): its workers join the fleet's.
    infos = [WorkerInfo(rank=k) for k in range(workers)]
    fleet.workers.extend(infos)
    fleet.count = max(fleet.count, workers)
    failure: LoadbenchError | None = None
    if ray is not None:
        from loadbench.workers.ray_link import ray_links

        opener = ray_links(workers, ray)
        fleet.transport = "ray"
    else:
        opener = _process_links(workers, python)
    async with opener as links, anyio.create_task_group() as tg:
        for link in links:
            infos[link.rank].pid = link.pid
        crew = _Crew(links, fleet, infos, tg, heartbeat_s)
        try:
            await _handshake(crew, hello, timeout_s=READY_TIMEOUT_S)
            for index, plan in enumerate(plans):
                if not crew.alive():
                    fleet.warnings.append("every worker was lost: later stages did not run")
                    break
                result = await _stage(crew, index, plan, server, on_parts)
                if result is not None:
                    on_stage_end(result)
            for rank in crew.alive():
                crew.info[rank].status = "done"
        except LoadbenchError as exc:
            failure = exc  # raised below, outside the task group, as itself
        finally:
            tg.cancel_scope.cancel()
            crew.close()
    if failure is not None:
        raise failure
    return fleet
