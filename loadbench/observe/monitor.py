"""The harness watching itself: its own CPU and its event loop's lag, per stage.

A load generator that is short of CPU reports the server as slower than it is, and
nothing in its latency numbers shows it. Measured on this project's machine
(../shared/research/client-limits.md §6): timing error stayed within ~1 ms p99 only while
the client used less than ~60% of its core. So every stage carries these figures, and a
stage whose client crossed the line is flagged instead of silently skewed.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import anyio
import psutil

from loadbench.metrics import new_histogram, percentile_ms, record

# Above these the harness, not the server, may be setting the pace.
CPU_BOTTLENECK_PERCENT = 60.0
LAG_BOTTLENECK_MS = 2.0  # ... or a tenth of the stage's ITL p50, when that is longer
LAG_SHARE_OF_ITL = 0.1
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


def lag_limit_ms(itl_p50_ms: float | None) -> float:
    """How much loop lag a stage can take before its figures are skewed.

    A stamp is late by the loop's lag, so what lag matters is relative to the finest
    interval being measured: 2 ms blurs 1 ms token gaps but is 6% of a 35 ms one (a CPU
    llama.cpp server), where a box whose other core is busy routinely wakes the client
    2-3 ms late without any figure moving.
    """
    return max(LAG_BOTTLENECK_MS, LAG_SHARE_OF_ITL * (itl_p50_ms or 0.0))


def judge(cpu_percent: float, lag_p99_ms: float, itl_p50_ms: float | None = None) -> str | None:
    """The warning for a client-bound stage, or None when the figures can be trusted."""
    reasons = []
    if cpu_percent > CPU_BOTTLENECK_PERCENT:
        reasons.append(f"client CPU {cpu_percent:.0f}% > {CPU_BOTTLENECK_PERCENT:.0f}% of a core")
    limit = lag_limit_ms(itl_p50_ms)
    if lag_p99_ms > limit:
        reasons.append(f"event-loop lag p99 {lag_p99_ms:.1f} ms > {limit:.3g} ms")
    if not reasons:
        return None
    if cpu_percent <= CPU_BOTTLENECK_PERCENT:  # idle client, late wake-ups: the box is busy
        advice = (
            "the client is idle but wakes late, so the machine is short of CPU (the server "
            "or another process holds the cores); leave the client a core of its own"
        )
    else:
        advice = "use fewer streams per process, more processes, or a faster core"
    return (
        "the load generator may be the bottleneck ("
        + "; ".join(reasons)
        + f"): latencies include client delay; {advice}"
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

    def finish(self, itl_p50_ms: float | None = None) -> ClientHealth:
        times = self._process.cpu_times()
        wall = max(time.perf_counter() - self._wall0, 1e-9)
        cpu = round(100.0 * (times.user + times.system - self._cpu0) / wall, 1)
        p99 = percentile_ms(self._lag, 99)
        warning = judge(cpu, p99, itl_p50_ms)
        return ClientHealth(
            cpu_percent=cpu,
            loop_lag_ms_p50=percentile_ms(self._lag, 50),
            loop_lag_ms_p99=p99,
            loop_lag_ms_max=round(self._lag.get_max_value() / 1000, 3),
            rss_mb=round(self._process.memory_info().rss / 2**20, 1),
            bottleneck=warning is not None,
            warning=warning,
        )


SERVER_INTERVAL_S = 0.5


@dataclass(frozen=True)
class GpuUsage:
    index: int
    name: str
    memory_used_mb: float  # peak over the stage, whole device
    memory_total_mb: float
    utilization_percent_mean: float
    process_memory_mb: float | None  # peak, the server's own processes, when NVML tells

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ServerUsage:
    """The server process (and its children) as seen from this machine, per stage."""

    pid: int | None
    name: str | None
    samples: int
    cpu_percent_mean: float  # of one core; 200 = two cores busy
    cpu_percent_max: float
    rss_mb_max: float
    gpus: tuple[GpuUsage, ...]
    note: str | None

    def to_dict(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["gpus"] = [g.to_dict() for g in self.gpus]
        return d


def find_listening_pid(host: str, port: int) -> int | None:
    """The pid listening on a local port, where the OS lets us see it (not always on macOS)."""
    if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        return None
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    except (psutil.Error, OSError):
        return None
    return None


class _Nvml:
    """nvidia-ml-py (the ``gpu`` extra), imported only when present; absent GPUs are no error."""

    def __init__(self) -> None:
        self.handles: list[object] = []
        self._nvml: Any = None
        self.names: list[str] = []
        self.totals: list[float] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                self.handles.append(handle)
                name = pynvml.nvmlDeviceGetName(handle)
                self.names.append(name.decode() if isinstance(name, bytes) else str(name))
                self.totals.append(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20)
            self._nvml = pynvml
        except Exception:  # no library, no driver, no device: sample CPU only
            self.handles = []

    def sample(self, pids: set[int]) -> list[tuple[float, float, float | None]]:
        """Per device: (memory used MB, utilization %, the given pids' memory MB or None)."""
        out: list[tuple[float, float, float | None]] = []
        nvml = self._nvml
        for handle in self.handles:
            try:
                used = nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
                util = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                mine = [p.usedGpuMemory for p in procs if p.pid in pids and p.usedGpuMemory]
                out.append((used, util, sum(mine) / 2**20 if mine else None))
            except Exception:
                out.append((0.0, 0.0, None))
        return out


class ServerMonitor:
    """Samples the server's CPU, memory and GPUs every half second during a stage.

    Only meaningful when the server runs on this machine: its pid comes from
    ``--server-pid``, from the simulator loadbench started, or from the listening socket
    of a loopback target. Without a pid, GPUs are still sampled device-wide.
    """

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._process: psutil.Process | None = None
        self._note: str | None = None
        if pid is not None:
            try:
                self._process = psutil.Process(pid)
            except psutil.Error as exc:
                self._note = f"cannot watch pid {pid}: {exc}"
        self._nvml = _Nvml()
        self._reset()

    def _reset(self) -> None:
        self._cpu: list[float] = []
        self._rss = 0.0
        self._gpu: list[list[tuple[float, float, float | None]]] = []

    def _family(self) -> list[psutil.Process]:
        assert self._process is not None
        try:
            return [self._process, *self._process.children(recursive=True)]
        except psutil.Error:
            return [self._process]

    def _take(self, family: list[psutil.Process]) -> None:
        cpu = 0.0
        rss = 0.0
        for p in family:
            try:
                cpu += p.cpu_percent(None)
                rss += p.memory_info().rss / 2**20
            except psutil.Error:
                continue
        self._cpu.append(cpu)
        self._rss = max(self._rss, rss)

    async def sample(self) -> None:
        """Runs until cancelled; the first psutil reading only sets the baseline."""
        self._reset()
        family = self._family() if self._process is not None else []
        for p in family:
            with contextlib.suppress(psutil.Error):
                p.cpu_percent(None)
        while True:
            await anyio.sleep(SERVER_INTERVAL_S)
            if family:
                self._take(family)
            if self._nvml.handles:
                self._gpu.append(self._nvml.sample({p.pid for p in family}))

    def finish(self) -> ServerUsage:
        gpus = []
        for i, gpu_name in enumerate(self._nvml.names):
            column = [row[i] for row in self._gpu if i < len(row)]
            mine = [m for _, _, m in column if m is not None]
            gpus.append(
                GpuUsage(
                    index=i,
                    name=gpu_name,
                    memory_used_mb=round(max((u for u, _, _ in column), default=0.0), 1),
                    memory_total_mb=round(self._nvml.totals[i], 1),
                    utilization_percent_mean=round(sum(u for _, u, _ in column) / len(column), 1)
                    if column
                    else 0.0,
                    process_memory_mb=round(max(mine), 1) if mine else None,
                )
            )
        process_name: str | None = None
        if self._process is not None:
            with contextlib.suppress(psutil.Error):
                process_name = self._process.name()
        return ServerUsage(
            pid=self.pid,
            name=process_name,
            samples=len(self._cpu),
            cpu_percent_mean=round(sum(self._cpu) / len(self._cpu), 1) if self._cpu else 0.0,
            cpu_percent_max=round(max(self._cpu, default=0.0), 1),
            rss_mb_max=round(self._rss, 1),
            gpus=tuple(gpus),
            note=self._note,
        )
