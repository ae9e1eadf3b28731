"""``nvidia-smi`` as a GPU reader, for machines with the driver but not ``nvidia-ml-py``.

Two queries per tick, both CSV without header or units::

    nvidia-smi --query-gpu=index,uuid,name,memory.used,memory.total,utilization.gpu,power.draw
    nvidia-smi --query-compute-apps=gpu_uuid,pid,used_memory

Any field may read ``[N/A]``, ``[Not Supported]``, ``[Insufficient Permissions]`` or
``[Unknown Error]`` (power on consumer boards, utilisation under MIG, process memory under
Windows WDDM): those are None, never 0. Under MIG a process may be listed against a MIG
device's UUID (``MIG-...``) rather than its GPU's; with one GPU it is that GPU's, with
several it is left out. A failing command (``No devices were found``, a driver mismatch)
reads as no GPUs with ``problem`` saying why. Each call starts processes (50-300 ms), so
the monitor calls :meth:`SmiReader.read` in a worker thread.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadbench.observe.gpus import GpuReader, GpuReading, NoGpu, NvmlReader

GPU_FIELDS = "index,uuid,name,memory.used,memory.total,utilization.gpu,power.draw"
APP_FIELDS = "gpu_uuid,pid,used_memory"
_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SmiGpu:
    index: int
    uuid: str
    name: str
    memory_used_mb: float | None  # MiB, as nvidia-smi prints them
    memory_total_mb: float | None
    utilization_percent: float | None
    power_w: float | None


@dataclass(frozen=True)
class SmiApp:
    gpu_uuid: str
    pid: int
    used_memory_mb: float | None


def number(text: str) -> float | None:
    """A field's number, or None for ``[N/A]``, ``[Not Supported]`` and anything else."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if value == value else None  # NaN


def _rows(text: str, fields: int) -> list[list[str]]:
    rows = []
    for row in csv.reader(text.splitlines(), skipinitialspace=True):
        if len(row) == fields:
            rows.append([cell.strip() for cell in row])
    return rows


def parse_gpus(text: str) -> list[SmiGpu]:
    """``--query-gpu=`` :data:`GPU_FIELDS` output; lines that do not fit are skipped."""
    out = []
    for index, uuid, name, used, total, util, power in _rows(text, 7):
        position = number(index)
        if position is None:
            continue
        out.append(
            SmiGpu(
                index=int(position),
                uuid=uuid,
                name=name,
                memory_used_mb=number(used),
                memory_total_mb=number(total),
                utilization_percent=number(util),
                power_w=number(power),
            )
        )
    return out


def parse_apps(text: str) -> list[SmiApp]:
    """``--query-compute-apps=`` :data:`APP_FIELDS` output."""
    out = []
    for uuid, pid, used in _rows(text, 3):
        if not pid.isdigit():
            continue
        out.append(SmiApp(uuid, int(pid), number(used)))
    return out


def process_memory(gpus: list[SmiGpu], apps: list[SmiApp], pids: set[int]) -> dict[int, float]:
    """MiB per GPU index used by ``pids``, for the GPUs where any of them has a figure."""
    by_uuid = {g.uuid: g.index for g in gpus}
    out: dict[int, float] = {}
    for app in apps:
        if app.pid not in pids or app.used_memory_mb is None:
            continue
        index = by_uuid.get(app.gpu_uuid)
        if index is None and len(gpus) == 1:  # a MIG device's UUID on the only GPU
            index = gpus[0].index
        if index is not None:
            out[index] = out.get(index, 0.0) + app.used_memory_mb
    return out


class SmiReader:
    source = "nvidia-smi"
    blocking = True

    def __init__(self, path: str) -> None:
        self.path = path
        self.problem: str | None = None

    def _run(self, *args: str) -> str | None:
        try:
            done = subprocess.run(
                [self.path, *args, "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.problem = f"{self.path}: {exc}"
            return None
        if done.returncode != 0:
            said = (done.stdout + done.stderr).strip().splitlines()
            self.problem = f"nvidia-smi exited {done.returncode}: {said[0] if said else ''}"
            return None
        return done.stdout

    def read(self, pids: set[int]) -> list[GpuReading]:
        text = self._run(f"--query-gpu={GPU_FIELDS}")
        if text is None:
            return []
        gpus = parse_gpus(text)
        mine: dict[int, float] = {}
        if pids:
            apps = self._run(f"--query-compute-apps={APP_FIELDS}")
            mine = process_memory(gpus, parse_apps(apps or ""), pids)
        return [
            GpuReading(
                index=g.index,
                name=g.name,
                memory_used_mb=g.memory_used_mb,
                memory_total_mb=g.memory_total_mb,
                utilization_percent=g.utilization_percent,
                power_w=g.power_w,
                energy_mj=None,
                process_memory_mb=mine.get(g.index),
            )
            for g in gpus
        ]


def _import_pynvml() -> Any:
    import pynvml

    return pynvml


def find_gpus(
    *,
    nvml: Callable[[], Any] = _import_pynvml,
    which: Callable[[str], str | None] = shutil.which,
) -> GpuReader | NoGpu:
    """NVML when it is installed and starts, else ``nvidia-smi`` when it is on PATH, else
    why neither; ``nvml`` and ``which`` are parameters so tests can stand in for both."""
    try:
        module = nvml()
    except ImportError:
        why = "nvidia-ml-py not installed"
    else:
        try:
            reader = NvmlReader(module)
        except Exception as exc:  # no driver or no device: try the command, say why if none
            why = f"NVML did not start ({exc})"
        else:
            if reader.read(set()):
                return reader
            why = "NVML found no device"
    path = which("nvidia-smi")
    if path is not None:
        return SmiReader(path)
    return NoGpu(f"{why}, and no nvidia-smi on PATH")
