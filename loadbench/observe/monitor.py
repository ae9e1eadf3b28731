"""The harness watching itself: its own CPU and its event loop's lag, per stage.

A load generator that is short of CPU reports the server as slower than it is, and
nothing in its latency numbers shows it. Measured on this project's machine
(../shared/research/client-limits.md §6): timing error stayed within ~1 ms p99 only while
the client used less than ~60% of its core. So every stage carries these figures, and a
stage whose client crossed the line is flagged instead of silently skewed.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import psutil

from loadbench.metrics import new_histogram, percentile_ms, record
from loadbench.observe.energy import POWERCAP_ROOT, EnergyUse, RaplMeter
from loadbench.observe.gpus import GpuReader, GpuReading, NoGpu
from loadbench.observe.machine import (
    MachineReader,
    ServerUsage,
    family_row,
    gpu_energy,
    gpu_row,
    gpu_usages,
)
from loadbench.observe.nvsmi import find_gpus
from loadbench.observe.series import SeriesRecorder

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

    @property
    def label(self) -> str | None:
        return client_label(self.cpu_percent, bottleneck=self.bottleneck)


def lag_limit_ms(itl_p50_ms: float | None) -> float:
    """How much loop lag a stage can take before its figures are skewed.

    A stamp is late by the loop's lag, so what lag matters is relative to the finest
    interval being measured: 2 ms blurs 1 ms token gaps but is 6% of a 35 ms one (a CPU
    llama.cpp server), where a box whose other core is busy routinely wakes the client
    2-3 ms late without any figure moving.
    """
    return max(LAG_BOTTLENECK_MS, LAG_SHARE_OF_ITL * (itl_p50_ms or 0.0))


CLIENT_BOUND = "client-bound"
LATE_WAKE_UPS = "late wake-ups"


def client_label(cpu_percent: float | None, *, bottleneck: bool) -> str | None:
    """The short verdict beside a flagged stage, matching :func:`judge`'s advice: the client
    itself busy (``client-bound``: spread the streams), or idle but woken late by a machine
    whose cores are taken (``late wake-ups``: free a core). A stage flagged only for lag
    while its client used 3% CPU is not client-bound, whatever "bottleneck" suggests.
    Reads the stored figures, so files written before the label existed get it too."""
    if not bottleneck:
        return None
    if cpu_percent is not None and cpu_percent > CPU_BOTTLENECK_PERCENT:
        return CLIENT_BOUND
    return LATE_WAKE_UPS


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

    def finish(self, itl_p50_ms: float | None = None, *, measured: bool = True) -> ClientHealth:
        """``measured``: False for a stage with no measured request (a warm-up that failed),
        whose CPU over a few milliseconds says nothing about the client: never judged."""
        times = self._process.cpu_times()
        wall = max(time.perf_counter() - self._wall0, 1e-9)
        cpu = round(100.0 * (times.user + times.system - self._cpu0) / wall, 1)
        p99 = percentile_ms(self._lag, 99)
        warning = judge(cpu, p99, itl_p50_ms) if measured else None
        return ClientHealth(
            cpu_percent=cpu,
            loop_lag_ms_p50=percentile_ms(self._lag, 50),
            loop_lag_ms_p99=p99,
            loop_lag_ms_max=round(self._lag.get_max_value() / 1000, 3),
            rss_mb=round(self._process.memory_info().rss / 2**20, 1),
            bottleneck=warning is not None,
            warning=warning,
        )


def find_listening_pid(host: str, port: int, proc: Path = Path("/proc")) -> int | None:
    """The pid listening on a local port, where the OS lets us see it (not always on macOS)."""
    if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        return None
    if (proc / "net" / "tcp").exists():
        return _linux_listener(port, proc)
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    except (psutil.Error, OSError):
        return None
    return None


def _linux_listener(port: int, proc: Path) -> int | None:
    """The listening socket's inode from /proc/net/tcp{,6}, then the first process holding
    it: stops at the first match, where psutil reads every connection of every process
    (~180 ms of start-up on a CI box, before the first request)."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local address "0100007F:1F90", state "0A" (LISTEN), inode in the tenth field
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:  # gone, or not ours to read
            continue
    return None


SERVER_INTERVAL_S = 0.5


class ServerMonitor:
    """Samples the server's CPU and memory, the machine's, its GPUs and RAPL zones every
    ``interval_s`` during a stage, keeping every reading (:class:`StageSeries`).

    The server's figures need its pid: from ``--server-pid``, from the simulator loadbench
    started, or from the listening socket of a loopback target; without one the machine,
    its GPUs (device-wide) and its RAPL zones are still read. ``gpus``: a reader, a
    :class:`NoGpu` saying why there is none, or None to look (NVML, then ``nvidia-smi``).
    Each tick costs a few milliseconds of psutil (NVML: microseconds) on the event loop;
    ``nvidia-smi`` runs in a worker thread.
    """

    def __init__(
        self,
        pid: int | None,
        *,
        interval_s: float = SERVER_INTERVAL_S,
        gpus: GpuReader | NoGpu | None = None,
        powercap_root: Path = POWERCAP_ROOT,
    ) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self._process: psutil.Process | None = None
        self._note: str | None = None
        if pid is not None:
            try:
                self._process = psutil.Process(pid)
            except psutil.Error as exc:
                self._note = f"cannot watch pid {pid}: {exc}"
        found = find_gpus() if gpus is None else gpus
        self._gpus: GpuReader | None = None if isinstance(found, NoGpu) else found
        self._no_gpu = found.reason if isinstance(found, NoGpu) else None
        self._rapl = RaplMeter(powercap_root)
        self._machine = MachineReader()
        self._reset()

    def _reset(self) -> None:
        self._series = SeriesRecorder(self.interval_s)
        self._family: list[psutil.Process] = []
        self._t0: float | None = None
        self._devices: dict[int, GpuReading] = {}
        self._baseline: list[GpuReading] = []

    def _pids(self) -> set[int]:
        return {p.pid for p in self._family}

    def _cheap_row(self, t_s: float) -> dict[str, float | None]:
        row = family_row(self._family)
        row.update(self._machine.row())
        row.update(self._rapl.tick(t_s))
        return row

    def _add(self, t_s: float, row: dict[str, float | None], gpus: list[GpuReading]) -> None:
        for r in gpus:
            self._devices[r.index] = r
        row.update(gpu_row(gpus))
        self._series.add(t_s, row)

    def _since_start(self) -> float:
        assert self._t0 is not None
        return time.perf_counter() - self._t0

    async def sample(self) -> None:
        """Runs until cancelled, a tick every ``interval_s`` on absolute times (a late tick
        is not made up); the readings at the start only set baselines."""
        self._reset()
        if self._process is not None:
            try:
                self._family = [self._process, *self._process.children(recursive=True)]
            except psutil.Error:
                self._family = [self._process]
        family_row(self._family)
        self._machine.start()
        self._t0 = time.perf_counter()
        self._rapl.start(0.0)
        reader = self._gpus
        if reader is not None and not reader.blocking:
            self._baseline = reader.read(self._pids())
        due = anyio.current_time()
        while True:
            due = max(due + self.interval_s, anyio.current_time())
            await anyio.sleep_until(due)
            t_s = self._since_start()
            row = self._cheap_row(t_s)
            gpus: list[GpuReading] = []
            if reader is not None and reader.blocking:
                gpus = await anyio.to_thread.run_sync(
                    reader.read, self._pids(), abandon_on_cancel=True
                )
            elif reader is not None:
                gpus = reader.read(self._pids())
            self._add(t_s, row, gpus)

    def finish(self, output_tokens: int | None = None) -> ServerUsage:
        """The stage's usage; a stage that ended since the last tick gets a closing reading
        (so a 0.35 s stage has one), except from ``nvidia-smi``, too slow for the loop.
        ``output_tokens`` (the stage's) turns joules into joules per token."""
        if self._t0 is not None:
            t_s = self._since_start()
            if not self._series.t_s or t_s - self._series.t_s[-1] >= self.interval_s / 4:
                reader = self._gpus
                closing = reader.read(self._pids()) if reader and not reader.blocking else []
                self._add(t_s, self._cheap_row(t_s), closing)
        series = self._series.freeze()
        summaries = series.summaries()
        cpu = summaries.get("server_cpu_percent")
        rss = summaries.get("server_rss_mb")
        process_name: str | None = None
        if self._process is not None:
            with contextlib.suppress(psutil.Error):
                process_name = self._process.name()
        source = self._gpus.source if self._gpus is not None else None
        absent: dict[str, str] = {}
        energy: list[EnergyUse] = []
        if self._gpus is None:
            absent["gpu"] = self._no_gpu or "not looked for"
        elif not self._devices and self._t0 is not None:
            absent["gpu"] = getattr(self._gpus, "problem", None) or f"{source} listed no GPU"
        else:
            used, missing = gpu_energy(
                series, self._devices, self._baseline, source or "", output_tokens
            )
            energy += used
            absent.update(missing)
        if self._rapl.absent is not None:
            absent["rapl"] = self._rapl.absent
        elif self._t0 is not None:
            energy += self._rapl.finish(output_tokens)
        return ServerUsage(
            pid=self.pid,
            name=process_name,
            samples=cpu.count if cpu is not None else 0,
            cpu_percent_mean=round(cpu.mean, 1) if cpu is not None else 0.0,
            cpu_percent_max=round(cpu.max, 1) if cpu is not None else 0.0,
            rss_mb_max=round(rss.max, 1) if rss is not None else 0.0,
            gpus=gpu_usages(series, self._devices, source),
            note=self._note,
            series=series if self._t0 is not None else None,
            energy=tuple(energy),
            absent=absent,
            machine_memory_total_mb=round(self._machine.memory_total_mb, 1),
        )
