"""What one tick of the server monitor reads, and what a stage's readings add up to.

The readings (server process family, the machine's CPU and memory, GPUs, RAPL) become one
row of named numbers; :func:`server_usage` turns a stage's rows (a
:class:`~loadbench.observe.series.StageSeries`) into the per-stage summary the result file
and the summary table have always carried, plus energy per meter and why a meter is absent.

Column names carry their units: ``server_cpu_percent`` (of one core: 200 = two cores),
``server_rss_mb``, ``machine_cpu_percent`` (mean over cores, 0-100),
``machine_cpu_busiest_core_percent``, ``machine_memory_used_mb``,
``machine_memory_available_mb``, ``gpu{i}_memory_used_mb``, ``gpu{i}_utilization_percent``,
``gpu{i}_power_w``, ``gpu{i}_server_memory_mb``, ``rapl_{zone}_power_w``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import psutil

from loadbench.observe.energy import EnergyUse, energy_use
from loadbench.observe.gpus import GpuReading, energy_from
from loadbench.observe.series import ColumnSummary, StageSeries, held_integral


@dataclass(frozen=True)
class GpuUsage:
    index: int
    name: str
    memory_used_mb: float  # peak over the stage, whole device
    memory_total_mb: float
    utilization_percent_mean: float
    process_memory_mb: float | None  # peak, the server's own processes, when the driver tells
    memory_used_mb_mean: float | None = None
    power_w_mean: float | None = None  # of the readings; None when the device gives none
    power_w_max: float | None = None
    source: str | None = None  # "NVML" or "nvidia-smi"

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
    series: StageSeries | None = None
    energy: tuple[EnergyUse, ...] = ()
    absent: Mapping[str, str] = field(default_factory=dict)  # meter: why it has no figure
    machine_memory_total_mb: float | None = None

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "pid": self.pid,
            "name": self.name,
            "samples": self.samples,
            "cpu_percent_mean": self.cpu_percent_mean,
            "cpu_percent_max": self.cpu_percent_max,
            "rss_mb_max": self.rss_mb_max,
            "gpus": [g.to_dict() for g in self.gpus],
            "note": self.note,
        }
        if self.series is not None:
            d["machine_memory_total_mb"] = self.machine_memory_total_mb
            d["interval_s"] = self.series.interval_s
            d["series"] = self.series.to_dict()
            d["summary"] = {k: s.to_dict() for k, s in self.series.summaries().items()}
            d["energy"] = [e.to_dict() for e in self.energy]
            d["absent"] = dict(self.absent)
        return d


def family_row(family: Sequence[psutil.Process]) -> dict[str, float | None]:
    """The server and its children: CPU since the last call (of one core) and RSS."""
    if not family:
        return {}
    cpu = 0.0
    rss = 0.0
    seen = 0
    for p in family:
        try:
            cpu += p.cpu_percent(None)
            rss += p.memory_info().rss / 2**20
            seen += 1
        except psutil.Error:
            continue
    if not seen:
        return {"server_cpu_percent": None, "server_rss_mb": None}
    return {"server_cpu_percent": cpu, "server_rss_mb": rss}


class MachineReader:
    """The machine's CPU per core from its own deltas of ``cpu_times`` (``psutil.cpu_percent``
    keeps one module-wide baseline that any other caller would move) and its memory."""

    def __init__(self) -> None:
        self._last: list[tuple[float, float]] = []
        self.memory_total_mb = psutil.virtual_memory().total / 2**20

    @staticmethod
    def _times() -> list[tuple[float, float]]:
        out = []
        for t in psutil.cpu_times(percpu=True):
            idle = t.idle + getattr(t, "iowait", 0.0)
            out.append((sum(t), idle))
        return out

    def start(self) -> None:
        self._last = self._times()

    def row(self) -> dict[str, float | None]:
        now = self._times()
        cores = []
        for (total0, idle0), (total1, idle1) in zip(self._last, now, strict=False):
            span = total1 - total0
            if span > 0:
                cores.append(max(0.0, min(100.0, 100.0 * (1 - (idle1 - idle0) / span))))
        self._last = now
        memory = psutil.virtual_memory()
        return {
            "machine_cpu_percent": sum(cores) / len(cores) if cores else None,
            "machine_cpu_busiest_core_percent": max(cores) if cores else None,
            "machine_memory_used_mb": (memory.total - memory.available) / 2**20,
            "machine_memory_available_mb": memory.available / 2**20,
        }


def gpu_row(readings: Sequence[GpuReading]) -> dict[str, float | None]:
    row: dict[str, float | None] = {}
    for r in readings:
        row[f"gpu{r.index}_memory_used_mb"] = r.memory_used_mb
        row[f"gpu{r.index}_utilization_percent"] = r.utilization_percent
        row[f"gpu{r.index}_power_w"] = r.power_w
        row[f"gpu{r.index}_server_memory_mb"] = r.process_memory_mb
    return row


def _stat(summaries: Mapping[str, ColumnSummary], column: str, stat: str) -> float | None:
    found = summaries.get(column)
    return None if found is None else round(float(getattr(found, stat)), 1)


def gpu_usages(
    series: StageSeries, devices: Mapping[int, GpuReading], source: str | None
) -> tuple[GpuUsage, ...]:
    """Per device seen during the stage (``devices``: its latest reading, for name and total)."""
    summaries = series.summaries()
    out = []
    for index, last in sorted(devices.items()):
        p = f"gpu{index}_"
        out.append(
            GpuUsage(
                index=index,
                name=last.name,
                memory_used_mb=_stat(summaries, p + "memory_used_mb", "max") or 0.0,
                memory_total_mb=round(last.memory_total_mb or 0.0, 1),
                utilization_percent_mean=_stat(summaries, p + "utilization_percent", "mean") or 0.0,
                process_memory_mb=_stat(summaries, p + "server_memory_mb", "max"),
                memory_used_mb_mean=_stat(summaries, p + "memory_used_mb", "mean"),
                power_w_mean=_stat(summaries, p + "power_w", "mean"),
                power_w_max=_stat(summaries, p + "power_w", "max"),
                source=source,
            )
        )
    return tuple(out)


def gpu_energy(
    series: StageSeries,
    devices: Mapping[int, GpuReading],
    baseline: Sequence[GpuReading],
    source: str,
    output_tokens: int | None,
) -> tuple[list[EnergyUse], dict[str, str]]:
    """NVML's energy counter where both ends have it, else the power readings integrated;
    a device with neither is absent, with the reason."""
    counted = energy_from(list(devices.values()), baseline)
    used: list[EnergyUse] = []
    absent: dict[str, str] = {}
    for index, last in sorted(devices.items()):
        meter = f"gpu{index} {last.name}"
        powers = series.column(f"gpu{index}_power_w")
        ticks = [t for t, w in zip(series.t_s, powers, strict=True) if w is not None]
        if index in counted and ticks:
            joules = counted[index]
            used.append(energy_use(meter, "NVML energy counter", joules, ticks[-1], output_tokens))
            continue
        joules, seconds = held_integral(series.t_s, powers)
        if seconds > 0:
            method = f"integrated power ({source})"
            used.append(energy_use(meter, method, joules, seconds, output_tokens))
        else:
            absent[meter] = f"{source} gives no power reading for this device"
    return used, absent
