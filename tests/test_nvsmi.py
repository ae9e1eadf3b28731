"""The nvidia-smi fallback: its CSV read defensively, and the command run from a thread."""

from __future__ import annotations

import stat
import textwrap
from pathlib import Path

import anyio

from loadbench.observe.gpus import NoGpu
from loadbench.observe.monitor import ServerMonitor
from loadbench.observe.nvsmi import (
    SmiReader,
    find_gpus,
    number,
    parse_apps,
    parse_gpus,
    process_memory,
)

# Recorded with --format=csv,noheader,nounits (fields: GPU_FIELDS, APP_FIELDS).
ONE = (
    "0, GPU-5a3c1e2b-0000-1111-2222-333344445555, NVIDIA GeForce RTX 3060, 1234, 12288, 7, 21.43\n"
)
SEVERAL = textwrap.dedent(
    """\
    0, GPU-aaaaaaaa-0000-0000-0000-000000000000, NVIDIA A100-SXM4-80GB, 40211, 81920, 93, 312.57
    1, GPU-bbbbbbbb-0000-0000-0000-000000000000, NVIDIA A100-SXM4-80GB, 5, 81920, 0, 61.02
    2, GPU-cccccccc-0000-0000-0000-000000000000, NVIDIA A100-SXM4-80GB, 39870, 81920, 91, 298.11
    """
)
NOT_AVAILABLE = textwrap.dedent(
    """\
    0, GPU-dddddddd-0000-0000-0000-000000000000, Tesla K80, 0, 11441, 0, [N/A]
    1, GPU-eeeeeeee, NVIDIA GeForce GTX 1650, 512, 4096, [Not Supported], [Not Supported]
    """
)
# MIG mode: the GPU's utilisation is not reported; processes may sit on MIG devices.
MIG_GPU = (
    "0, GPU-ffffffff-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 20480, 81559, [N/A], 250\n"
)
MIG_APPS = textwrap.dedent(
    """\
    MIG-11111111-2222-3333-4444-555555555555, 4242, 9728
    MIG-66666666-7777-8888-9999-000000000000, 4243, [N/A]
    GPU-ffffffff-0000-0000-0000-000000000000, 999, 1024
    """
)


def test_one_gpu() -> None:
    (gpu,) = parse_gpus(ONE)
    assert (gpu.index, gpu.name) == (0, "NVIDIA GeForce RTX 3060")
    assert (gpu.memory_used_mb, gpu.memory_total_mb) == (1234.0, 12288.0)
    assert (gpu.utilization_percent, gpu.power_w) == (7.0, 21.43)


def test_several_gpus_keep_their_indexes() -> None:
    gpus = parse_gpus(SEVERAL)
    assert [g.index for g in gpus] == [0, 1, 2]
    assert [g.power_w for g in gpus] == [312.57, 61.02, 298.11]


def test_missing_fields_are_none_never_zero() -> None:
    k80, gtx = parse_gpus(NOT_AVAILABLE)
    assert k80.power_w is None
    assert k80.utilization_percent == 0.0
    assert gtx.utilization_percent is None
    assert gtx.power_w is None
    assert gtx.memory_used_mb == 512.0
    for text in ("[N/A]", "[Not Supported]", "[Insufficient Permissions]", "", "nan"):
        assert number(text) is None


def test_error_text_and_odd_lines_are_skipped() -> None:
    text = "No devices were found\n\n" + ONE + "x, y, z, 1, 2, 3, 4\n0, too, few\n"
    assert [g.index for g in parse_gpus(text)] == [0]


def test_mig_processes_count_towards_their_gpu() -> None:
    gpus = parse_gpus(MIG_GPU)
    assert gpus[0].utilization_percent is None
    apps = parse_apps(MIG_APPS)
    assert [a.pid for a in apps] == [4242, 4243, 999]
    assert apps[1].used_memory_mb is None
    assert process_memory(gpus, apps, {4242, 4243}) == {0: 9728.0}
    assert process_memory(gpus, apps, {999}) == {0: 1024.0}
    assert process_memory(gpus, apps, {1}) == {}


def test_mig_processes_on_several_gpus_are_left_out() -> None:
    gpus = parse_gpus(SEVERAL)
    apps = parse_apps(MIG_APPS)
    assert process_memory(gpus, apps, {4242}) == {}


def _fake_smi(tmp_path: Path, gpus: str, apps: str, code: int = 0) -> str:
    """An executable that answers like nvidia-smi: recorded text per query."""
    (tmp_path / "gpus.txt").write_text(gpus)
    (tmp_path / "apps.txt").write_text(apps)
    script = tmp_path / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in *compute-apps*) f=apps.txt ;; *) f=gpus.txt ;; esac\n'
        f'cat "{tmp_path}/$f"\n'
        f"exit {code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_reader_runs_the_command(tmp_path: Path) -> None:
    reader = SmiReader(_fake_smi(tmp_path, MIG_GPU, MIG_APPS))
    (reading,) = reader.read({4242})
    assert (reading.name, reading.power_w, reading.process_memory_mb) == (
        "NVIDIA H100 80GB HBM3",
        250.0,
        9728.0,
    )
    assert reading.energy_mj is None
    assert reader.problem is None


def test_a_failing_command_reads_as_no_gpu_with_the_reason(tmp_path: Path) -> None:
    reader = SmiReader(_fake_smi(tmp_path, "No devices were found\n", "", code=6))
    assert reader.read(set()) == []
    assert reader.problem == "nvidia-smi exited 6: No devices were found"


def test_without_nvml_the_command_is_the_fallback() -> None:
    def no_nvml() -> object:
        raise ImportError("no pynvml")

    found = find_gpus(nvml=no_nvml, which=lambda _: "/usr/bin/nvidia-smi")
    assert isinstance(found, SmiReader)
    assert found.path == "/usr/bin/nvidia-smi"
    neither = find_gpus(nvml=no_nvml, which=lambda _: None)
    assert neither == NoGpu("nvidia-ml-py not installed, and no nvidia-smi on PATH")


def test_monitor_reads_nvidia_smi_in_a_thread_and_integrates_power(tmp_path: Path) -> None:
    monitor = ServerMonitor(
        None,
        interval_s=0.1,
        gpus=SmiReader(_fake_smi(tmp_path, SEVERAL, "")),
        powercap_root=tmp_path / "no-powercap",
    )

    async def stage() -> None:
        with anyio.move_on_after(0.75):
            await monitor.sample()

    anyio.run(stage)
    usage = monitor.finish(output_tokens=1000)
    assert usage.series is not None
    powers = usage.series.column("gpu0_power_w")
    assert 2 <= sum(p is not None for p in powers) <= 8
    assert [g.index for g in usage.gpus] == [0, 1, 2]
    assert usage.gpus[0].power_w_mean == 312.6
    assert usage.gpus[0].source == "nvidia-smi"
    gpu0 = next(e for e in usage.energy if e.meter.startswith("gpu0"))
    assert gpu0.method == "integrated power (nvidia-smi)"
    assert gpu0.watts_mean is not None
    assert abs(gpu0.watts_mean - 312.57) < 0.01
    assert gpu0.joules_per_output_token == gpu0.joules / 1000
    assert "rapl" in usage.absent
