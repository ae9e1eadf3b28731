"""What a run over workers knows of them: each worker's fate, and the run's ``workers``
block for the result file (count, transport, degraded, per-worker health and start skew).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from loadbench.run import RunState

__all__ = ["EXIT_DEGRADED", "Fleet", "WorkerInfo"]

# A run that lost a worker wrote its result, but not the load that was asked for.
EXIT_DEGRADED = 4


@dataclass
class WorkerInfo:
    rank: int
    pid: int | None = None
    host: str | None = None
    status: str = "starting"  # starting, ready, lost, done
    lost: str | None = None  # why, when lost
    lost_in: str | None = None  # the stage it was lost in
    rtt_ms: float | None = None
    clock_offset_ms: float | None = None  # its wall clock minus the driver's, estimated
    last: dict[str, int] = field(default_factory=dict)  # its last counters

    def to_dict(self) -> dict[str, object]:
        return {
            "rank": self.rank,
            "pid": self.pid,
            "host": self.host,
            "status": self.status,
            "lost": self.lost,
            "lost_in": self.lost_in,
            "rtt_ms": self.rtt_ms,
            "clock_offset_ms": self.clock_offset_ms,
            "last_counters": dict(self.last),
        }


@dataclass
class Fleet:
    """What a run over workers owns, filled as it goes (like ``RunState``, whose stages
    it holds): the caller keeps it when the run is cancelled."""

    state: RunState = field(default_factory=RunState)
    transport: str = "process"
    count: int = 0  # workers per stage (each model's stages start a fresh set)
    workers: list[WorkerInfo] = field(default_factory=list)
    stages: list[dict[str, object]] = field(default_factory=list)  # per merged stage
    warnings: list[str] = field(default_factory=list)

    cut: bool = False  # the last stage was cut short by a cancellation

    def close_partial(self, stopped: str | None = None) -> None:
        """As ``RunState.close_partial``: the stage a cancellation cut short is already
        kept, marked interrupted; a limit's name (``max_duration_s``) says it stopped."""
        if self.cut and stopped is not None and self.state.stages:
            last = self.state.stages[-1]
            self.state.stages[-1] = dataclasses.replace(last, interrupted=False, stopped=stopped)
        self.cut = False

    @property
    def degraded(self) -> bool:
        return any(w.status == "lost" for w in self.workers)

    def exit_code(self, *, allow_partial: bool) -> int:
        """0, or :data:`EXIT_DEGRADED` for a run that lost a worker without
        ``--allow-partial``."""
        return EXIT_DEGRADED if self.degraded and not allow_partial else 0

    def to_dict(self) -> dict[str, object]:
        """The result file's ``workers`` block."""
        return {
            "count": self.count,
            "transport": self.transport,
            "degraded": self.degraded,
            "workers": [w.to_dict() for w in self.workers],
            "stages": list(self.stages),
        }
