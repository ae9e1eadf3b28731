"""Resources over time: the series against the simulator, the report's table and plot, and
the client's validity label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest

from loadbench.observe.gpus import GpuReading, NoGpu
from loadbench.observe.monitor import (
    CLIENT_BOUND,
    LATE_WAKE_UPS,
    ServerMonitor,
    client_label,
    find_listening_pid,
    judge,
)
from loadbench.observe.series import SeriesRecorder, held_integral, summarize
from loadbench.report.blocks import Heading, Para, Table
from loadbench.report.resources import resource_images, resources_blocks
from loadbench.results.file import schema
from loadbench.sim.server import SimConfig, simulator_process


def test_columns_share_one_time_base_and_pad_late_columns() -> None:
    rec = SeriesRecorder(0.5)
    rec.add(0.5, {"a": 1.0})
    rec.add(1.0, {"a": 2.0, "b": 10.0})
    rec.add(1.5, {"b": None})
    series = rec.freeze()
    assert series.to_dict() == {
        "t_s": [0.5, 1.0, 1.5],
        "a": [1.0, 2.0, None],
        "b": [None, 10.0, None],
    }
    assert series.summaries()["a"].to_dict() == {
        "count": 2,
        "min": 1.0,
        "mean": 1.5,
        "max": 2.0,
        "p95": 2.0,
    }
    assert "b" in series.summaries()
    assert summarize([None]) is None
    # Held readings: 0.35 s at 100 W with one reading is 35 J; a gap counts nothing.
    assert held_integral([0.35], [100.0]) == pytest.approx((35.0, 0.35))
    assert held_integral([0.5, 1.0, 1.5], [10.0, None, 10.0]) == pytest.approx((10.0, 1.0))


def _watch(monitor: ServerMonitor, seconds: float) -> None:
    async def stage() -> None:
        with anyio.move_on_after(seconds):
            await monitor.sample()

    anyio.run(stage)


def _server_schema() -> dict[str, Any]:
    full = schema()
    return {"$defs": full["$defs"], **full["$defs"]["stage"]["properties"]["server"]}


def test_sampling_the_simulator_process(tmp_path: Path) -> None:
    with simulator_process(SimConfig()) as sim:
        port = int(sim.base_url.rsplit(":", 1)[1].split("/")[0])
        pid = find_listening_pid("127.0.0.1", port) or sim.pid
        monitor = ServerMonitor(
            pid, interval_s=0.2, gpus=NoGpu("none here"), powercap_root=tmp_path / "none"
        )
        _watch(monitor, 1.1)
        usage = monitor.finish(output_tokens=10)
    series = usage.series
    assert series is not None
    assert series.interval_s == 0.2
    # Ticks at 0.2 .. 1.0 s on absolute times, then the closing reading at ~1.1 s.
    assert 4 <= len(series.t_s) <= 7
    assert list(series.t_s) == sorted(series.t_s)
    assert series.t_s[0] >= 0.19
    assert all(len(values) == len(series.t_s) for _, values in series.columns)
    assert min(v for v in series.column("server_rss_mb") if v is not None) > 5
    assert all(v is not None for v in series.column("machine_memory_available_mb"))
    assert usage.samples == len(series.t_s)
    jsonschema.validate(usage.to_dict(), _server_schema())


def test_a_stage_shorter_than_the_interval_still_gets_a_reading(tmp_path: Path) -> None:
    with simulator_process(SimConfig()) as sim:
        monitor = ServerMonitor(sim.pid, gpus=NoGpu("none here"), powercap_root=tmp_path / "none")
        _watch(monitor, 0.35)
        usage = monitor.finish()
    assert usage.series is not None
    assert len(usage.series.t_s) == 1
    assert usage.samples == 1
    assert usage.rss_mb_max > 5


def test_no_gpu_and_no_rapl_is_clean_and_says_why_per_meter(tmp_path: Path) -> None:
    monitor = ServerMonitor(
        None,
        interval_s=0.1,
        gpus=NoGpu("nvidia-ml-py not installed, and no nvidia-smi on PATH"),
        powercap_root=tmp_path / "powercap",
    )
    _watch(monitor, 0.25)
    usage = monitor.finish(output_tokens=100)
    assert usage.energy == ()
    assert usage.gpus == ()
    assert usage.samples == 0
    assert usage.absent == {
        "gpu": "nvidia-ml-py not installed, and no nvidia-smi on PATH",
        "rapl": f"no {tmp_path / 'powercap'} (RAPL needs Linux on an Intel or AMD CPU)",
    }
    d = usage.to_dict()
    assert d["energy"] == []
    assert "server_cpu_percent" not in d["series"]
    jsonschema.validate(d, _server_schema())


class OneGpu:
    source = "NVML"
    blocking = False

    def __init__(self) -> None:
        self.used = 1000.0

    def read(self, pids: set[int]) -> list[GpuReading]:
        self.used += 500.0  # a KV cache filling
        return [GpuReading(0, "Fake GPU", self.used, 24576.0, 90.0, 200.0, None, None)]


def _document(tmp_path: Path) -> dict[str, Any]:
    stages = []
    for i, label in enumerate(("c=1", "c=4")):
        monitor = ServerMonitor(
            None, interval_s=0.1, gpus=OneGpu(), powercap_root=tmp_path / "none"
        )
        _watch(monitor, 0.35)
        stages.append(
            {
                "model": "m",
                "label": label,
                "interrupted": False,
                "started_at": f"2025-01-01T00:00:0{2 * i}.000Z",
                "duration_s": 0.35,
                "server": monitor.finish(output_tokens=70).to_dict(),
            }
        )
    return {"stages": stages}


def test_report_resources_table_and_plot(tmp_path: Path) -> None:
    doc = _document(tmp_path)
    heading, _, table, absent = resources_blocks(doc, "m")
    assert heading == Heading(3, "Resources")
    assert isinstance(table, Table)
    assert [r[0] for r in table.rows] == ["c=1", "c=4"]
    row = dict(zip(table.header, table.rows[0], strict=True))
    assert row["GPU W mean"] == "200.0"
    assert float(row["GPU mem peak MB"]) > float(row["GPU mem mean MB"]) >= 2000
    assert float(row["GPU J/token"]) == pytest.approx(1.0, rel=0.35)  # ~200 W x 0.35 s / 70
    assert row["CPU pkg J/token"] == "—"
    assert isinstance(absent, Para)
    assert "rapl: no " in absent.text
    images = resource_images([("run", doc)])
    assert list(images) == ["resources-run-m.png"]
    assert images["resources-run-m.png"].startswith(b"\x89PNG")


def test_old_documents_get_no_resources_section() -> None:
    old = {"model": "m", "label": "c=1", "server": {"pid": 1, "rss_mb_max": 30.0, "gpus": []}}
    assert resources_blocks({"stages": [old]}, "m") == []
    assert resource_images([("run", {"stages": [old]})]) == {}


def test_the_label_matches_the_advice() -> None:
    busy = judge(85.0, 0.5)
    late = judge(3.0, 7.5)
    assert busy is not None
    assert "more processes" in busy
    assert late is not None
    assert "wakes late" in late
    assert client_label(85.0, bottleneck=True) == CLIENT_BOUND == "client-bound"
    assert client_label(3.0, bottleneck=True) == LATE_WAKE_UPS == "late wake-ups"
    assert client_label(3.0, bottleneck=False) is None
