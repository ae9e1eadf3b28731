"""A stage's state: the one in progress (``LiveStage``), the finished ones (``StageResult``)
and the run's (``RunState``), which the caller owns so that a cancelled run still holds
every stage finished so far and the partial one.

Apart from the engine's loops so that the progress display and the result writer read
the same state without importing how it is produced.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import perf_counter_ns

from loadbench.metrics import Metric, StageAccumulator, StageFigures
from loadbench.observe import ClientHealth, ClientMonitor, ServerMonitor, ServerUsage
from loadbench.records import RequestRecord
from loadbench.run.lengths import Lengths
from loadbench.run.plan import StagePlan
from loadbench.run.prompt_figures import PromptFigures, PromptFold
from loadbench.run.work import StageWork

# Time one loop turn spends folding finished requests before it lets the loop read again.
FOLD_SLICE_NS = 500_000

__all__ = [
    "FOLD_SLICE_NS",
    "MIN_REQUESTS_FOR_ERROR_STOP",
    "MODEL_FAILED",
    "LiveStage",
    "RunState",
    "StageResult",
    "now_iso",
]

# An error rate over fewer requests than this is noise; the stage goes on until then.
MIN_REQUESTS_FOR_ERROR_STOP = 10
# A stage that ends for one of these reasons says the model fails: its later stages are
# not run (the run goes on with the next model).
MODEL_FAILED = ("warmup_failed", "max_error_rate")


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
    lengths: Lengths | None = None  # a [workload]'s requested and measured lengths


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
    work: StageWork | None = None  # a [workload]'s items, and their lengths folded
    # Records waiting to be folded, each with whether it opened its connection (the
    # accumulator's flag for "the request about to be added", taken at once).
    _pending: deque[tuple[RequestRecord, bool]] = field(default_factory=deque, repr=False)
    _folding: bool = False

    def sink(self, rec: RequestRecord) -> None:
        """Each finished request. An ok measured one is folded on a later turn of the loop,
        so that when a wave of streams ends together, folding them (~60 µs of histogram
        records each) does not hold up the stamps of the others' last tokens: the stamps
        are taken as bytes arrive, and the loop reads between two slices of folding."""
        if rec.error is None and not rec.warmup:
            self._pending.append((rec, self.accumulator.opened()))
            if not self._folding:
                self._folding = True
                asyncio.get_running_loop().call_soon(self._fold_next)
            return
        self._fold(rec)

    def _fold_next(self) -> None:
        """Folds for up to ``FOLD_SLICE_NS`` of this loop turn: a saturated loop still keeps
        up (thousands of turns a second), and a wave of endings is read between slices."""
        pending = self._pending
        end = perf_counter_ns() + FOLD_SLICE_NS
        while pending:
            self._fold(*pending.popleft())
            if perf_counter_ns() >= end:
                break
        if pending:
            asyncio.get_running_loop().call_soon(self._fold_next)
        else:
            self._folding = False

    def flush(self) -> None:
        """Folds what is still waiting: before the stage's figures are read."""
        while self._pending:
            self._fold(*self._pending.popleft())

    def _fold(self, rec: RequestRecord, fresh: bool | None = None) -> None:
        acc = self.accumulator
        acc.add(rec, fresh)
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
            and (sent := acc.sent + len(self._pending)) >= MIN_REQUESTS_FOR_ERROR_STOP
            and acc.failed > limit * sent
        ):
            self.stopped = "max_error_rate"
            if self.stop is not None:
                self.stop()

    def pace(self, previous: RequestRecord | None, rec: RequestRecord, think_ns: int = 0) -> None:
        """One worker's next request: the gap since its last one ended is harness time,
        less a session's think time, which the scenario asked for."""
        self.worker_busy_ns += rec.end_ns - rec.sent_ns
        if previous is not None:
            self.worker_gap_ns += max(rec.sent_ns - previous.end_ns - think_ns, 0)

    def finish(self, *, interrupted: bool) -> StageResult:
        self.flush()
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
            finished_at=now_iso(),
            interrupted=interrupted,
            error_samples=dict(self.error_samples),
            server=self.server.finish(figures.output_tokens) if self.server is not None else None,
            busy_fraction=round(self.worker_busy_ns / total, 4) if total else None,
            stopped=self.stopped,
            prompts=self.by_prompt.finish() if self.by_prompt is not None else None,
            lengths=self.work.fold.lengths if self.work is not None else None,
        )


@dataclass
class RunState:
    stages: list[StageResult] = field(default_factory=list)
    live: LiveStage | None = None
    stale_reuses: int = 0  # requests resent after a kept-alive connection closed under them
    # The last finished stage's per-prompt fold (None without one): a worker sends its
    # histograms for its driver to merge. Only the last: a sweep keeps no histograms.
    prompt_fold: PromptFold | None = None

    def end(self, result: StageResult) -> None:
        """The live stage is over: keep its result and its per-prompt fold."""
        self.stages.append(result)
        if self.live is not None:
            self.prompt_fold = self.live.by_prompt
        self.live = None

    def close_partial(self, stopped: str | None = None) -> None:
        """After a cancellation: keep the stage that was running, marked interrupted
        (by a signal) or stopped (by a limit such as ``max_duration_s``)."""
        if self.live is not None:
            if stopped is not None:
                self.live.stopped = stopped
            self.end(self.live.finish(interrupted=stopped is None))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
