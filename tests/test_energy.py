"""Energy meters: RAPL against a fake powercap tree, NVML against a fake module."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from loadbench.observe.energy import RaplMeter, counter_delta
from loadbench.observe.gpus import NoGpu, NvmlReader
from loadbench.observe.monitor import ServerMonitor
from loadbench.observe.nvsmi import find_gpus

MAX_RANGE_UJ = 262143328850


def _zone(root: Path, name: str, label: str, energy_uj: int) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "max_energy_range_uj").write_text(f"{MAX_RANGE_UJ}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    return zone


def test_counter_delta_handles_one_wrap() -> None:
    assert counter_delta(100, 250, 1000) == 150
    assert counter_delta(900, 50, 1000) == 150


def test_rapl_packages_accumulate_across_a_wrap(tmp_path: Path) -> None:
    package = _zone(tmp_path, "intel-rapl:0", "package-0", MAX_RANGE_UJ - 5_000_000)
    _zone(tmp_path, "intel-rapl:0:0", "core", 0)  # a subzone: part of the package
    meter = RaplMeter(tmp_path)
    assert meter.absent is None
    assert [z.name for z in meter.zones] == ["package-0"]
    meter.start(0.0)
    (package / "energy_uj").write_text(f"{MAX_RANGE_UJ - 1_000_000}\n")  # +4 J
    assert meter.tick(1.0) == {"rapl_package-0_power_w": pytest.approx(4.0)}
    (package / "energy_uj").write_text("6000000\n")  # wrapped: +1 J +6 J
    assert meter.tick(2.0) == {"rapl_package-0_power_w": pytest.approx(7.0)}
    (use,) = meter.finish(output_tokens=110)
    assert (use.meter, use.method) == ("rapl package-0", "RAPL counter")
    assert use.joules == pytest.approx(11.0)
    assert use.watts_mean == pytest.approx(5.5)
    assert use.joules_per_output_token == pytest.approx(0.1)


def test_rapl_absent_says_why(tmp_path: Path) -> None:
    assert RaplMeter(tmp_path / "nothing").absent == (
        f"no {tmp_path / 'nothing'} (RAPL needs Linux on an Intel or AMD CPU)"
    )
    assert RaplMeter(tmp_path).absent == f"no RAPL zones under {tmp_path}"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_rapl_readable_by_root_only_is_absent_not_zero(tmp_path: Path) -> None:
    zone = _zone(tmp_path, "intel-rapl:0", "package-0", 1)
    (zone / "energy_uj").chmod(0)
    meter = RaplMeter(tmp_path)
    assert meter.absent is not None
    assert "readable by root only" in meter.absent
    assert meter.finish(100) == []


class FakeNvml:
    """The few pynvml functions loadbench calls, over two devices: one with the energy
    counter (Volta and later), one without it and without power readings."""

    def __init__(self) -> None:
        self.energy_mj = 1_000_000
        self.started = False

    def nvmlInit(self) -> None:
        self.started = True

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes | str:
        return b"NVIDIA H200" if h == 0 else "Tesla P4"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(used=(30 + h) * 2**30, total=141 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=80 if h == 0 else 0, memory=10)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        if h == 1:
            raise RuntimeError("NVMLError_NotSupported")
        return 400_000  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        if h == 1:
            raise RuntimeError("NVMLError_NotSupported")
        self.energy_mj += 40_000  # 40 J per reading
        return self.energy_mj

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        if h == 1:
            return [SimpleNamespace(pid=os.getpid(), usedGpuMemory=None)]  # WDDM
        return [
            SimpleNamespace(pid=os.getpid(), usedGpuMemory=20 * 2**30),
            SimpleNamespace(pid=1, usedGpuMemory=2**30),
        ]


def test_nvml_reader_reads_each_device_and_none_for_what_it_lacks() -> None:
    nvml = FakeNvml()
    h200, p4 = NvmlReader(nvml).read({os.getpid()})
    assert nvml.started
    assert (h200.name, p4.name) == ("NVIDIA H200", "Tesla P4")
    assert (h200.memory_used_mb, h200.memory_total_mb) == (30 * 1024, 141 * 1024)
    assert (h200.utilization_percent, h200.power_w) == (80.0, 400.0)
    assert h200.energy_mj == 1_040_000
    assert h200.process_memory_mb == 20 * 1024
    assert (p4.power_w, p4.energy_mj, p4.process_memory_mb) == (None, None, None)


class FakeNvmlV2(FakeNvml):
    """Bindings with memory info v2 (nvidia-ml-py 12+), on a driver that takes it for device
    0 only: v2's ``used`` leaves the driver's reserved memory out."""

    nvmlMemory_v2 = 0x02000028

    def nvmlDeviceGetMemoryInfo(self, h: int, version: int | None = None) -> Any:
        if version is None:
            return SimpleNamespace(used=(30 + h) * 2**30, total=141 * 2**30)
        if h == 1:
            raise RuntimeError("NVMLError_FunctionNotFound")
        return SimpleNamespace(used=29 * 2**30, reserved=2**30, total=141 * 2**30)


def test_nvml_memory_is_read_as_v2_where_the_driver_has_it() -> None:
    h200, p4 = NvmlReader(FakeNvmlV2()).read(set())
    assert h200.memory_used_mb == 29 * 1024  # reserved memory left out, as nvidia-smi does
    assert p4.memory_used_mb == 31 * 1024  # v1 where v2 is refused


def test_nvml_is_preferred_and_a_broken_one_falls_back() -> None:
    assert isinstance(find_gpus(nvml=FakeNvml, which=lambda _: None), NvmlReader)

    class NoDriver(FakeNvml):
        def nvmlInit(self) -> None:
            raise RuntimeError("NVMLError_DriverNotLoaded")

    found = find_gpus(nvml=NoDriver, which=lambda _: None)
    assert found == NoGpu(
        "NVML did not start (NVMLError_DriverNotLoaded), and no nvidia-smi on PATH"
    )


def test_monitor_energy_from_the_counter_and_rapl(tmp_path: Path) -> None:
    package = _zone(tmp_path, "intel-rapl:0", "package-0", 0)
    monitor = ServerMonitor(
        os.getpid(), interval_s=0.1, gpus=NvmlReader(FakeNvml()), powercap_root=tmp_path
    )

    async def stage() -> None:
        async def heat() -> None:
            for uj in range(1, 100):
                (package / "energy_uj").write_text(f"{uj * 1_000_000}\n")
                await anyio.sleep(0.05)

        with anyio.move_on_after(0.45):
            async with anyio.create_task_group() as tg:
                tg.start_soon(heat)
                await monitor.sample()

    anyio.run(stage)
    usage = monitor.finish(output_tokens=200)
    by_meter = {e.meter: e for e in usage.energy}
    h200 = by_meter["gpu0 NVIDIA H200"]
    assert h200.method == "NVML energy counter"
    readings = sum(v is not None for v in usage.series.column("gpu0_power_w"))  # type: ignore[union-attr]
    assert h200.joules == pytest.approx(40.0 * readings)  # the baseline read is not counted
    assert h200.joules_per_output_token == pytest.approx(h200.joules / 200)
    assert by_meter["rapl package-0"].joules > 0
    assert usage.absent == {"gpu1 Tesla P4": "NVML gives no power reading for this device"}
    assert usage.gpus[0].process_memory_mb == 20 * 1024
    assert usage.gpus[1].power_w_mean is None
