"""The harness watching itself: its own CPU and its event loop's lag, per stage.

A load generator that is short of CPU reports the server as slower than it is, and
nothing in its latency numbers shows it. Measured on this project's machine
(../shared/research/client-limits.md §6): timing error stayed within ~1 ms p99 only while
the client used less than ~60% of its core. So every stage carries these figures, and a
stage whose client crossed the line is flagged instead of silently skewed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
import psutil

from loadbench.metrics import new_histogram, percentile_ms, record

# Above these the harness, not the server, may be setting the pace.
CPU_BOTTLENECK_PERCENT = 60.0
LAG_BOTTLENECK_MS = 2.0
LAG_INTERVAL_S = 0.02


@dataclass(frozen=True)
class ClientHealth:
    cpu_percent: float  # of one core, over the stage's wall time
    loop_lag_ms_p50: float
    loop_lag_ms_p99: float
    loop_lag_ms_max: float
    rss_mb: float
    bottleneck: bool
    warning: str | None

    def to_dict(self) -> dict[str, object]:
        return {
            "cpu_percent": self.cpu_percent,
            "loop_lag_ms_p50": self.loop_lag_ms_p50,
            "loop_lag_ms_p99": self.loop_lag_ms_p99,
            "loop_lag_ms_max": self.loop_lag_ms_max,
            "rss_mb": self.rss_mb,
            "bottleneck": self.bottleneck,
            "warning": self.warning,
        }


def judge(cpu_percent: float, lag_p99_ms: float) -> str | None:
    """The warning for a client-bound stage, or None when the figures can be trusted."""
    reasons = []
    if cpu_percent > CPU_BOTTLENECK_PERCENT:
        reasons.append(f"client CPU {cpu_percent:.0f}% > {CPU_BOTTLENECK_PERCENT:.0f}% of a core")
    if lag_p99_ms > LAG_BOTTLENECK_MS:
        reasons.append(f"event-loop lag p99 {lag_p99_ms:.1f} ms > {LAG_BOTTLENECK_MS:.0f} ms")
    if not reasons:
        return None
    return (
        "the load generator may be the bottleneck ("
        + "; ".join(reasons)
        + "): latencies include client delay; use fewer streams per process or a faster core"
    )


class ClientMonitor:
    """Samples loop lag in a task; CPU comes from process times at start and finish."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._lag = new_histogram()
        self._cpu0 = 0.0
        self._wall0 = 0.0

    def start(self) -> None:
        times = self._process.cpu_times()
        self._cpu0 = times.user + times.system
        self._wall0 = time.perf_counter()

    async def sample_lag(self) -> None:
        """Runs until cancelled: how late a short sleep wakes up is how late every event is."""
        interval_ns = int(LAG_INTERVAL_S * 1e9)
        while True:
            before = time.perf_counter_ns()
            await anyio.sleep(LAG_INTERVAL_S)
            late_ns = time.perf_counter_ns() - before - interval_ns
            record(self._lag, max(late_ns, 0) // 1000)

    def finish(self) -> ClientHealth:
        times = self._process.cpu_times()
        wall = max(time.perf_counter() - self._wall0, 1e-9)
        cpu = round(100.0 * (times.user + times.system - self._cpu0) / wall, 1)
        p99 = percentile_ms(self._lag, 99)
        warning = judge(cpu, p99)
        return ClientHealth(
            cpu_percent=cpu,
            loop_lag_ms_p50=percentile_ms(self._lag, 50),
            loop_lag_ms_p99=p99,
            loop_lag_ms_max=round(self._lag.get_max_value() / 1000, 3),
            rss_mb=round(self._process.memory_info().rss / 2**20, 1),
            bottleneck=warning is not None,
            warning=warning,
        )
