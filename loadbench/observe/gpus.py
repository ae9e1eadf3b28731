"""GPU readings from NVML (``nvidia-ml-py``, the ``gpu`` extra) or, without it, ``nvidia-smi``.

Two readers with one method, ``read(pids)``: NVML answers in microseconds and is called on
the event loop; ``nvidia-smi`` is a process start (50-300 ms) and is run in a worker thread
(``blocking``). NVML is passed in as a module-like object, so its code paths are tested
against a fake one; :func:`loadbench.observe.nvsmi.find_gpus` is the one place that
imports ``pynvml``.

NVML quirks wrapped here: names are bytes in old bindings; ``usedGpuMemory`` is None under
Windows WDDM; ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded) exists
from Volta on and raises NotSupported before; any call may raise for one device while the
others answer, so a failed field is None, not 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    memory_used_mb: float | None  # whole device
    memory_total_mb: float | None
    utilization_percent: float | None
    power_w: float | None
    energy_mj: int | None  # NVML's total-energy counter, where the device has one
    process_memory_mb: float | None  # the given pids' own memory, when the driver tells


class GpuReader(Protocol):
    source: str  # "NVML", "nvidia-smi": named in the result beside each figure
    blocking: bool  # True: call read() in a worker thread

    def read(self, pids: set[int]) -> list[GpuReading]: ...


@dataclass(frozen=True)
class NoGpu:
    """No reader, and why: reported per meter instead of zeros."""

    reason: str


def _memory(nvml: Any, handle: object) -> Any:
    """Memory info v2 where the bindings and the driver have it: its ``used`` leaves out the
    driver's reserved memory, as nvidia-smi does. v1 counts it: on an idle H200 (driver
    580) it said 615 MB used where nvidia-smi and v2 said 0."""
    version = getattr(nvml, "nvmlMemory_v2", None)
    if version is not None:
        try:
            return nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
        except Exception:  # an older driver refuses v2: v1 below
            pass
    return _call(nvml, "nvmlDeviceGetMemoryInfo", handle)


def _call(nvml: Any, function: str, handle: object) -> Any:
    """``nvml.function(handle)``, None when it raises or the bindings lack it."""
    try:
        return getattr(nvml, function)(handle)
    except Exception:  # NVMLError_NotSupported, NoPermission, GpuIsLost...: that field is None
        return None


class NvmlReader:
    source = "NVML"
    blocking = False

    def __init__(self, nvml: Any) -> None:
        """``nvml``: ``pynvml`` or anything with its functions; raises when NVML cannot start
        (no driver), which :func:`find_gpus` turns into :class:`NoGpu`."""
        nvml.nvmlInit()
        self._nvml = nvml
        self._handles = [
            nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())
        ]
        self._names = []
        for handle in self._handles:
            name = _call(nvml, "nvmlDeviceGetName", handle)
            self._names.append(name.decode() if isinstance(name, bytes) else str(name or "GPU"))

    def read(self, pids: set[int]) -> list[GpuReading]:
        nvml = self._nvml
        out = []
        for i, (handle, name) in enumerate(zip(self._handles, self._names, strict=True)):
            memory = _memory(nvml, handle)
            util = _call(nvml, "nvmlDeviceGetUtilizationRates", handle)
            power_mw = _call(nvml, "nvmlDeviceGetPowerUsage", handle)
            energy = _call(nvml, "nvmlDeviceGetTotalEnergyConsumption", handle)
            procs = _call(nvml, "nvmlDeviceGetComputeRunningProcesses", handle)
            mine = [
                p.usedGpuMemory
                for p in (procs or ())
                if p.pid in pids and getattr(p, "usedGpuMemory", None)
            ]
            out.append(
                GpuReading(
                    index=i,
                    name=name,
                    memory_used_mb=None if memory is None else memory.used / 2**20,
                    memory_total_mb=None if memory is None else memory.total / 2**20,
                    utilization_percent=None if util is None else float(util.gpu),
                    power_w=None if power_mw is None else power_mw / 1000,
                    energy_mj=None if energy is None else int(energy),
                    process_memory_mb=sum(mine) / 2**20 if mine else None,
                )
            )
        return out


def energy_from(readings: Sequence[GpuReading], baseline: Sequence[GpuReading]) -> dict[int, float]:
    """Joules per device index from NVML's counter, where both readings have it."""
    first = {r.index: r.energy_mj for r in baseline if r.energy_mj is not None}
    return {
        r.index: (r.energy_mj - first[r.index]) / 1000
        for r in readings
        if r.energy_mj is not None and r.index in first and r.energy_mj >= first[r.index]
    }
