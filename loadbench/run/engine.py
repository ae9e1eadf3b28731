"""The engine: executes a plan's stages against the target and folds records into stages.

Closed loop (``concurrency``): N workers, each sending its next request as soon as its
last one ended; warmup requests run first, as their own phase, so the measured window
starts warm. Open loop (``rate``): request i is due at ``stage start + offset_i`` and is
sent then, whatever else is in flight (up to ``max_concurrency``); latencies count from
the due time, so a server (or a client) that falls behind shows it instead of hiding it
(coordinated omission), and ``sent - due`` is kept as schedule lag.

State lives in a :class:`RunState` owned by the caller: when the run is cancelled
(Ctrl-C, SIGTERM), the caller still holds every stage finished so far and the partial one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Sequence
from time import perf_counter_ns
from typing import Any

import anyio

from loadbench.http import LoadClient
from loadbench.metrics import (
    Metric,
    SloLimit,
    StageAccumulator,
)
from loadbench.observe import (
    ClientMonitor,
    MetricsScraper,
    ServerMonitor,
)
from loadbench.records import ErrorKind, RequestRecord, TokenSource
from loadbench.run.plan import StagePlan
from loadbench.run.prompt_figures import prompt_fold
from loadbench.run.stage import (
    MODEL_FAILED,
    LiveStage,
    RunState,
    StageResult,
    now_iso,
)
from loadbench.run.work import StageWork, WorkPool
from loadbench.scenario import LoadMode

# Open-loop stages start this far in the future so the first due time is not already late.
_LEAD_S = 0.005
# Open loop without max_concurrency: connections opened before the window, at most, and
# the E2E assumed (seconds) when no earlier stage measured one.
_PREOPEN_MAX = 512
_PREOPEN_E2E_S = 1.0


def expected_requests(plan: StagePlan) -> int | None:
    if plan.mode is LoadMode.RATE:
        return plan.units * plan.turns - plan.warmup
    if plan.requests is not None:
        return -(-plan.requests // plan.turns) * plan.turns  # whole sessions
    return None


def connections_needed(plan: StagePlan, done: Sequence[StageResult] = ()) -> int:
    """Connections to open before a stage: its concurrency, or its ``max_concurrency``;
    else (open loop) rate × E2E, from the last stage's mean E2E when there is one, bounded
    by the stage's request count and ``_PREOPEN_MAX``."""
    if plan.mode is not LoadMode.RATE:
        return plan.concurrency or 1
    if plan.max_concurrency:
        return min(plan.max_concurrency, len(plan.offsets_ns))
    e2e = done[-1].figures.latency_ms.get(Metric.E2E.value) if done else None
    e2e_s = e2e.mean / 1000 if e2e is not None and e2e.count else _PREOPEN_E2E_S
    estimate = int((plan.rate or 0.0) * e2e_s) + 1
    return max(1, min(estimate, len(plan.offsets_ns), _PREOPEN_MAX))


async def run_stages(
    plans: Sequence[StagePlan],
    prompts: Sequence[str],
    client: LoadClient,
    state: RunState,
    on_stage_end: Callable[[StageResult], None] = lambda _: None,
    server: ServerMonitor | None = None,
    slo: Sequence[SloLimit] = (),
    max_error_rate: float | None = None,
    on_record: Callable[[StagePlan, RequestRecord], None] | None = None,
    scraper: MetricsScraper | None = None,
    served_as: str | None = None,
    pool: WorkPool | None = None,
) -> None:
    """Each plan in turn; a model whose stage ends in ``MODEL_FAILED`` gets no more stages.

    ``served_as``: the model id to send instead of each plan's model name (the name as
    typed stays the stage's label), when a server lists it under another id. ``pool``: a
    ``[workload]``'s items, sent instead of ``prompts``.
    """
    failed: set[str] = set()
    for plan in plans:
        if plan.model in failed:
            continue
        result = await run_stage(
            plan,
            prompts,
            client,
            state,
            server,
            slo,
            max_error_rate,
            on_record,
            scraper,
            served_as,
            pool,
        )
        on_stage_end(result)
        if result.stopped in MODEL_FAILED:
            failed.add(plan.model)


async def run_stage(
    plan: StagePlan,
    prompts: Sequence[str],
    client: LoadClient,
    state: RunState,
    server: ServerMonitor | None = None,
    slo: Sequence[SloLimit] = (),
    max_error_rate: float | None = None,
    on_record: Callable[[StagePlan, RequestRecord], None] | None = None,
    scraper: MetricsScraper | None = None,
    served_as: str | None = None,
    pool: WorkPool | None = None,
) -> StageResult:
    """Run one stage; ``slo`` holds the per-request limits that decide goodput.

    A stage whose error rate passes ``max_error_rate`` (after a few requests) stops early:
    requests in flight are cancelled and counted as interrupted, and the stage is marked.
    """
    # A workload's items are sized before the stage starts: never inside its window.
    work = await StageWork.prepare(pool, plan, client.body) if pool is not None else None
    live = LiveStage(
        plan=plan,
        accumulator=StageAccumulator(
            open_loop=plan.mode is LoadMode.RATE, slo=slo, connects=client.measures_connects
        ),
        monitor=ClientMonitor(),
        started_at=now_iso(),
        expected=expected_requests(plan),
        server=server,
        max_error_rate=max_error_rate,
        on_record=on_record,
        by_prompt=prompt_fold(plan.prompt_order, len(prompts), work is not None),
        work=work,
    )
    state.live = live
    # Open the stage's connections first, so its first wave measures the server, not this
    # client's connect loop; a connect a request still pays is recorded on its own.
    live.accumulator.preopened = await client.preconnect(connections_needed(plan, state.stages))
    client.on_connect = live.accumulator.add_connect
    live.monitor.start()
    async with anyio.create_task_group() as tg:
        live.stop = tg.cancel_scope.cancel
        tg.start_soon(live.monitor.sample_lag)
        if server is not None:
            tg.start_soon(server.sample)
        if scraper is not None:
            tg.start_soon(scraper.sample)
        model = served_as or plan.model
        if plan.mode is LoadMode.RATE:
            await _open_loop(plan, prompts, client, live, model)
        else:
            await _closed_loop(plan, prompts, client, live, model)
        tg.cancel_scope.cancel()
    result = live.finish(interrupted=False)
    if scraper is not None:
        metrics = await scraper.finish()
        result = dataclasses.replace(result, server_metrics=metrics.to_dict())
    state.end(result)
    return result


async def _send(
    client: LoadClient,
    sink: Callable[[RequestRecord], None],
    *,
    index: int,
    warmup: bool,
    model: str,
    prompt: str,
    due_ns: int | None,
    body: bytes | None = None,
    answer: list[str] | None = None,
) -> RequestRecord:
    """Execute and record one request; one cut short by the run's cancellation still counts."""
    started = perf_counter_ns()
    try:
        rec = await client.execute(
            index=index,
            warmup=warmup,
            model=model,
            prompt=prompt,
            due_ns=due_ns,
            body=body,
            answer=answer,
        )
    except anyio.get_cancelled_exc_class():
        now = perf_counter_ns()
        sink(
            RequestRecord(
                index=index,
                warmup=warmup,
                due_ns=started if due_ns is None else due_ns,
                sent_ns=started,
                end_ns=now,
                token_ns=(),
                output_tokens=0,
                counted_by=TokenSource.EVENTS,
                error=ErrorKind.INTERRUPTED,
            )
        )
        raise
    sink(rec)
    return rec


async def _closed_loop(
    plan: StagePlan, prompts: Sequence[str], client: LoadClient, live: LiveStage, model: str
) -> None:
    """Each worker keeps one unit (a request, or a session) in flight. With ``ramp_s``,
    worker k starts k/N of the ramp in, and what is sent before the ramp ends is warmup."""
    order = plan.prompt_order
    concurrency = plan.concurrency or 1
    turns, work = plan.turns, live.work

    async def phase(
        first: int, limit: int | None, deadline: float | None, workers: int, ramp: float = 0.0
    ) -> None:
        units = itertools.count(first // turns)
        warmup_phase = first < plan.warmup
        taken = itertools.count()  # measured units started
        start = anyio.current_time()
        ramp_end = start + ramp

        async def worker(k: int) -> None:
            previous: RequestRecord | None = None
            if ramp:
                await anyio.sleep_until(start + ramp * k / workers)
            end = deadline + ramp if deadline is not None else None

            async def send(i: int, body: bytes, answer: list[str] | None, _: int | None) -> Any:
                nonlocal previous
                warmup = warmup_phase or (ramp > 0 and anyio.current_time() < ramp_end)
                rec = await _send(
                    client,
                    live.sink,
                    index=i,
                    warmup=warmup,
                    model=model,
                    prompt="" if work is not None else prompts[order[i % len(order)]],
                    due_ns=None,
                    body=body or None,
                    answer=answer,
                )
                if not warmup:
                    think = work.item(i).think_time_s if work is not None and i % turns else 0.0
                    live.pace(previous, rec, round(think * 1e9))
                previous = rec
                return rec

            while True:
                if end is not None and anyio.current_time() >= end:
                    return
                in_ramp = ramp > 0 and anyio.current_time() < ramp_end
                if limit is not None and not in_ramp and next(taken) >= limit:
                    return
                u = next(units)
                if work is None:
                    await send(u, b"", None, None)
                else:
                    await work.run(u, model, send, None)

        async with anyio.create_task_group() as tg:
            for k in range(workers):
                tg.start_soon(worker, k)

    if plan.warmup:
        await phase(0, plan.warmup // turns, None, min(concurrency, plan.warmup))
    ramp = plan.ramp_s or 0.0
    if plan.requests is not None:
        await phase(plan.warmup, -(-plan.requests // turns), None, concurrency, ramp)
    else:
        duration = plan.duration_s or 0.0
        await phase(plan.warmup, None, anyio.current_time() + duration, concurrency, ramp)


async def _open_loop(
    plan: StagePlan, prompts: Sequence[str], client: LoadClient, live: LiveStage, model: str
) -> None:
    order, work, sink = plan.prompt_order, live.work, live.sink
    limiter = anyio.Semaphore(plan.max_concurrency) if plan.max_concurrency else None

    async def send(i: int, body: bytes, answer: list[str] | None, due_ns: int | None) -> Any:
        return await _send(
            client,
            sink,
            index=i,
            warmup=i < plan.warmup,
            model=model,
            prompt="" if work is not None else prompts[order[i % len(order)]],
            due_ns=due_ns,
            body=body or None,
            answer=answer,
        )

    async def one(u: int, due_ns: int) -> None:
        # Time spent waiting for the limiter is schedule lag, by design.
        async with limiter if limiter is not None else contextlib.nullcontext():
            if work is None:
                await send(u, b"", None, due_ns)
            else:
                await work.run(u, model, send, due_ns)

    # Tie the two clocks once: anyio's for sleeping, perf_counter_ns for stamps.
    start = anyio.current_time() + _LEAD_S
    base_ns = perf_counter_ns() + int(_LEAD_S * 1e9)
    async with anyio.create_task_group() as tg:
        for u, offset_ns in enumerate(plan.offsets_ns):
            await anyio.sleep_until(start + offset_ns / 1e9)
            tg.start_soon(one, u, base_ns + offset_ns)
