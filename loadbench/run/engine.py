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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import perf_counter_ns

import anyio
from hdrh.histogram import HdrHistogram

from loadbench.http import LoadClient
from loadbench.metrics import (
    Metric,
    SloLimit,
    StageAccumulator,
    StageFigures,
    new_histogram,
    percentile_ms,
    record,
)
from loadbench.observe import (
    ClientHealth,
    ClientMonitor,
    MetricsScraper,
    ServerMonitor,
    ServerUsage,
)
from loadbench.records import ErrorKind, RequestRecord, TokenSource
from loadbench.run.plan import StagePlan
from loadbench.scenario import LoadMode

# Open-loop stages start this far in the future so the first due time is not already late.
_LEAD_S = 0.005
# An error rate over fewer requests than this is noise; the stage goes on until then.
MIN_REQUESTS_FOR_ERROR_STOP = 10
# A stage that ends for one of these reasons says the model fails: its later stages are
# not run (the run goes on with the next model).
MODEL_FAILED = ("warmup_failed", "max_error_rate")
# Open loop without max_concurrency: connections opened before the window, at most, and
# the E2E assumed (seconds) when no earlier stage measured one.
_PREOPEN_MAX = 512
_PREOPEN_E2E_S = 1.0
# Per-prompt figures for a prompt set of 2 up to this many prompts (two histograms each,
# ~190 KB apiece); beyond it, a dataset's prompts are too many to tell apart in a table.
MAX_PROMPT_FIGURES = 100


@dataclass(frozen=True)
class PromptFigures:
    """One prompt's ok measured requests in a stage, with their medians in ms from the
    due time; ``ttft_p50_ms`` is None when none of them streamed a token."""

    count: int
    ttft_p50_ms: float | None
    e2e_p50_ms: float


class PromptFold:
    """Per-prompt TTFT and E2E histograms, folded from each ok measured request: bounded
    state (two histograms per prompt seen), nothing kept per request."""

    def __init__(self, order: Sequence[int]) -> None:
        self._order = order
        self._hs: dict[int, tuple[HdrHistogram, HdrHistogram]] = {}

    def add(self, rec: RequestRecord) -> None:
        prompt = self._order[rec.index % len(self._order)]
        hs = self._hs.get(prompt)
        if hs is None:
            hs = self._hs[prompt] = (new_histogram(), new_histogram())
        due = min(rec.due_ns, rec.sent_ns)  # as the stage's accumulator counts it
        record(hs[1], (rec.end_ns - due + 500) // 1000)
        if rec.token_ns:
            record(hs[0], (rec.token_ns[0] - due + 500) // 1000)

    def finish(self) -> dict[int, PromptFigures]:
        return {
            prompt: PromptFigures(
                count=e2e.total_count,
                ttft_p50_ms=percentile_ms(ttft, 50.0) if ttft.total_count else None,
                e2e_p50_ms=percentile_ms(e2e, 50.0),
            )
            for prompt, (ttft, e2e) in sorted(self._hs.items())
        }


@dataclass(frozen=True)
class StageResult:
    plan: StagePlan
    figures: StageFigures
    client: ClientHealth
    started_at: str
    finished_at: str
    interrupted: bool
    error_samples: dict[str, str]
    server: ServerUsage | None = None
    busy_fraction: float | None = None  # closed loop: share of worker time with a request out
    # Why the stage ended early: "max_error_rate", "warmup_failed", "max_duration_s".
    stopped: str | None = None
    server_metrics: dict[str, object] | None = None  # the server's /metrics over the stage
    # By prompt index, when the stage had 2 to MAX_PROMPT_FIGURES prompts; else None.
    prompts: dict[int, PromptFigures] | None = None


@dataclass
class LiveStage:
    """The stage in progress: what a progress display reads and an interruption saves."""

    plan: StagePlan
    accumulator: StageAccumulator
    monitor: ClientMonitor
    started_at: str
    expected: int | None  # measured requests, when count-bounded
    server: ServerMonitor | None = None
    error_samples: dict[str, str] = field(default_factory=dict)
    warmup_done: int = 0
    warmup_failed: int = 0
    # Closed loop pacing: time workers spent with a request out, and between requests.
    worker_busy_ns: int = 0
    worker_gap_ns: int = 0
    max_error_rate: float | None = None
    on_record: Callable[[StagePlan, RequestRecord], None] | None = None
    stop: Callable[[], None] | None = None  # cancels the stage
    stopped: str | None = None
    by_prompt: PromptFold | None = None

    def sink(self, rec: RequestRecord) -> None:
        acc = self.accumulator
        acc.add(rec)
        if self.by_prompt is not None and rec.error is None and not rec.warmup:
            self.by_prompt.add(rec)
        if self.on_record is not None:
            self.on_record(self.plan, rec)
        if rec.warmup:
            self.warmup_done += 1
            if rec.error is not None:
                self.warmup_failed += 1
                if self.warmup_failed == self.plan.warmup and self.stopped is None:
                    # Every warm-up request failed: the model is not serving; the
                    # measured requests would only count the same failure again.
                    self.stopped = "warmup_failed"
                    if self.stop is not None:
                        self.stop()
        if rec.error is not None and rec.detail and rec.error not in self.error_samples:
            self.error_samples[str(rec.error)] = rec.detail
        limit = self.max_error_rate
        if (
            limit is not None
            and self.stopped is None
            and acc.sent >= MIN_REQUESTS_FOR_ERROR_STOP
            and acc.failed > limit * acc.sent
        ):
            self.stopped = "max_error_rate"
            if self.stop is not None:
                self.stop()

    def pace(self, previous: RequestRecord | None, rec: RequestRecord) -> None:
        """One worker's next request: the gap since its last one ended is harness time."""
        self.worker_busy_ns += rec.end_ns - rec.sent_ns
        if previous is not None:
            self.worker_gap_ns += max(rec.sent_ns - previous.end_ns, 0)

    def finish(self, *, interrupted: bool) -> StageResult:
        total = self.worker_busy_ns + self.worker_gap_ns
        figures = self.accumulator.finish()
        itl = figures.latency_ms.get(Metric.ITL.value)
        return StageResult(
            plan=self.plan,
            figures=figures,
            client=self.monitor.finish(
                itl.p50 if itl and itl.count else None, measured=figures.sent > 0
            ),
            started_at=self.started_at,
            finished_at=_now_iso(),
            interrupted=interrupted,
            error_samples=dict(self.error_samples),
            server=self.server.finish(figures.output_tokens) if self.server is not None else None,
            busy_fraction=round(self.worker_busy_ns / total, 4) if total else None,
            stopped=self.stopped,
            prompts=self.by_prompt.finish() if self.by_prompt is not None else None,
        )


@dataclass
class RunState:
    stages: list[StageResult] = field(default_factory=list)
    live: LiveStage | None = None
    stale_reuses: int = 0  # requests resent after a kept-alive connection closed under them

    def close_partial(self, stopped: str | None = None) -> None:
        """After a cancellation: keep the stage that was running, marked interrupted
        (by a signal) or stopped (by a limit such as ``max_duration_s``)."""
        if self.live is not None:
            if stopped is not None:
                self.live.stopped = stopped
            self.stages.append(self.live.finish(interrupted=stopped is None))
            self.live = None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def expected_requests(plan: StagePlan) -> int | None:
    if plan.mode is LoadMode.RATE:
        return len(plan.offsets_ns) - plan.warmup
    return plan.requests


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
) -> None:
    """Each plan in turn; a model whose stage ends in ``MODEL_FAILED`` gets no more stages.

    ``served_as``: the model id to send instead of each plan's model name (the name as
    typed stays the stage's label), when a server lists it under another id.
    """
    failed: set[str] = set()
    for plan in plans:
        if plan.model in failed:
            continue
        result = await run_stage(
            plan, prompts, client, state, server, slo, max_error_rate, on_record, scraper, served_as
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
) -> StageResult:
    """Run one stage; ``slo`` holds the per-request limits that decide goodput.

    A stage whose error rate passes ``max_error_rate`` (after a few requests) stops early:
    requests in flight are cancelled and counted as interrupted, and the stage is marked.
    """
    live = LiveStage(
        plan=plan,
        accumulator=StageAccumulator(
            open_loop=plan.mode is LoadMode.RATE, slo=slo, connects=client.measures_connects
        ),
        monitor=ClientMonitor(),
        started_at=_now_iso(),
        expected=expected_requests(plan),
        server=server,
        max_error_rate=max_error_rate,
        on_record=on_record,
        by_prompt=PromptFold(plan.prompt_order)
        if 2 <= len(prompts) <= MAX_PROMPT_FIGURES and plan.prompt_order
        else None,
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
            await _open_loop(plan, prompts, client, live.sink, model)
        else:
            await _closed_loop(plan, prompts, client, live, model)
        tg.cancel_scope.cancel()
    result = live.finish(interrupted=False)
    if scraper is not None:
        metrics = await scraper.finish()
        result = dataclasses.replace(result, server_metrics=metrics.to_dict())
    state.stages.append(result)
    state.live = None
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
) -> RequestRecord:
    """Execute and record one request; one cut short by the run's cancellation still counts."""
    started = perf_counter_ns()
    try:
        rec = await client.execute(
            index=index, warmup=warmup, model=model, prompt=prompt, due_ns=due_ns
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
    order = plan.prompt_order
    concurrency = plan.concurrency or 1

    async def phase(first: int, stop: int | None, deadline: float | None, workers: int) -> None:
        counter = itertools.count(first)
        warmup = first < plan.warmup

        async def worker() -> None:
            previous: RequestRecord | None = None
            while True:
                i = next(counter)
                if stop is not None and i >= stop:
                    return
                if deadline is not None and anyio.current_time() >= deadline:
                    return
                prompt = prompts[order[i % len(order)]]
                rec = await _send(
                    client,
                    live.sink,
                    index=i,
                    warmup=warmup,
                    model=model,
                    prompt=prompt,
                    due_ns=None,
                )
                if not warmup:
                    live.pace(previous, rec)
                previous = rec

        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)

    if plan.warmup:
        await phase(0, plan.warmup, None, min(concurrency, plan.warmup))
    if plan.requests is not None:
        await phase(plan.warmup, plan.warmup + plan.requests, None, concurrency)
    else:
        duration = plan.duration_s or 0.0
        await phase(plan.warmup, None, anyio.current_time() + duration, concurrency)


async def _open_loop(
    plan: StagePlan,
    prompts: Sequence[str],
    client: LoadClient,
    sink: Callable[[RequestRecord], None],
    model: str,
) -> None:
    order = plan.prompt_order
    limiter = anyio.Semaphore(plan.max_concurrency) if plan.max_concurrency else None

    async def one(i: int, due_ns: int) -> None:
        # Time spent waiting for the limiter is schedule lag, by design.
        async with limiter if limiter is not None else contextlib.nullcontext():
            await _send(
                client,
                sink,
                index=i,
                warmup=i < plan.warmup,
                model=model,
                prompt=prompts[order[i % len(order)]],
                due_ns=due_ns,
            )

    # Tie the two clocks once: anyio's for sleeping, perf_counter_ns for stamps.
    start = anyio.current_time() + _LEAD_S
    base_ns = perf_counter_ns() + int(_LEAD_S * 1e9)
    async with anyio.create_task_group() as tg:
        for i, offset_ns in enumerate(plan.offsets_ns):
            await anyio.sleep_until(start + offset_ns / 1e9)
            tg.start_soon(one, i, base_ns + offset_ns)
