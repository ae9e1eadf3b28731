"""Stop conditions, overwrite protection, streamed records and the open-file limit."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from loadbench.errors import UsageError
from loadbench.run.limits import ensure_open_files

BASE = """
    name = "rel"
    [target]
    timeout_s = 5
    [target.simulate]
    ttft_ms = 2
    itl_ms = 1
    seed = 4
    {faults}
    [[models]]
    name = "sim-model"
    [prompts]
    items = ["one", "two"]
    [request]
    max_tokens = 4
    [load]
    concurrency = [2]
    requests = {requests}
    warmup = {warmup}
    {load}
    {slo}
"""


def scenario(
    write: Callable[..., Path],
    *,
    faults: str = "",
    requests: int = 10,
    load: str = "",
    slo: str = "",
    warmup: int = 1,
) -> Path:
    return write(BASE.format(faults=faults, requests=requests, load=load, slo=slo, warmup=warmup))


def loadbench(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadbench", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def read(path: Path) -> dict[str, object]:
    doc = orjson.loads(path.read_bytes())
    assert isinstance(doc, dict)
    return doc


def test_an_existing_result_file_is_kept_unless_overwrite(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    out.write_text("precious")
    proc = loadbench("run", scenario(write_scenario), "-o", out, "-q")
    assert proc.returncode == 2
    assert f"{out}: exists; pass --overwrite to replace it" in proc.stderr
    assert out.read_text() == "precious"
    assert (
        loadbench("run", scenario(write_scenario), "-o", out, "-q", "--overwrite").returncode == 0
    )
    assert read(out)["schema_version"] == 1


def test_records_are_streamed_one_line_per_request(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    out, records = tmp_path / "r.json", tmp_path / "r.jsonl"
    proc = loadbench("run", scenario(write_scenario), "-o", out, "--records", records, "-q")
    assert proc.returncode == 0, proc.stderr
    lines = [orjson.loads(line) for line in records.read_bytes().splitlines()]
    assert len(lines) == 10 + 1  # measured and warmup
    assert sum(line["warmup"] for line in lines) == 1
    assert all(line["error"] is None and line["output_tokens"] == 4 for line in lines)
    assert all(line["e2e_ms"] >= line["ttft_ms"] > 0 for line in lines)


def test_a_stage_stops_early_past_max_error_rate(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    path = scenario(
        write_scenario,
        faults="error_rate = 1.0",
        requests=500,
        load="max_error_rate = 0.5",
        warmup=0,  # a failed warm-up would stop the stage first (the model is then failed)
    )
    proc = loadbench("run", path, "-o", out, "-q")
    # The only model went over max_error_rate: it is failed, and no model completed.
    assert proc.returncode == 1, proc.stderr
    assert "every model was skipped or failed" in proc.stderr
    doc = read(out)
    assert doc["models"][0]["status"] == "failed"  # type: ignore[index]
    (stage,) = doc["stages"]  # type: ignore[misc]
    assert stage["stopped"] == "max_error_rate"
    req = stage["requests"]
    assert 10 <= req["sent"] < 500
    assert req["sent"] == req["ok"] + req["failed"]
    assert stage["errors"]["http_500"] >= 10


def test_max_duration_stops_the_run_and_keeps_what_it_has(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    path = scenario(write_scenario, requests=100_000)
    proc = loadbench("run", path, "-o", out, "-q", "--max-duration-s", "1.5")
    assert proc.returncode == 0, proc.stderr
    doc = read(out)
    (stage,) = doc["stages"]  # type: ignore[misc]
    assert stage["stopped"] == "max_duration_s"
    assert stage["interrupted"] is False
    assert 0 < stage["requests"]["sent"] < 100_000
    assert stage["requests"]["sent"] == stage["requests"]["ok"] + stage["requests"]["failed"]


def test_an_slo_gives_goodput_in_the_result(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    path = scenario(write_scenario, slo="[slo]\n    ttft_ms = { p95 = 5000 }")
    assert loadbench("run", path, "-o", out, "-q").returncode == 0
    (stage,) = read(out)["stages"]  # type: ignore[misc]
    assert stage["goodput"]["good"] == stage["requests"]["ok"] == 10


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE on Windows")
def test_the_open_file_limit_is_checked_before_the_run() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert ensure_open_files(10) == soft  # nothing to do
    if hard != resource.RLIM_INFINITY:
        with pytest.raises(UsageError, match=r"ulimit -n \d+"):
            ensure_open_files(hard + 1)


def test_failures_with_a_sample_message_are_written(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    """Regression: error_samples keyed by ErrorKind made orjson refuse the whole result."""
    out = tmp_path / "r.json"
    # No warm-up: with 80% of requests failing, a failed warm-up would mark the model failed.
    path = scenario(write_scenario, faults="drop_rate = 0.5\n    no_done_rate = 0.3", warmup=0)
    proc = loadbench("run", path, "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr
    (stage,) = read(out)["stages"]  # type: ignore[misc]
    assert set(stage["error_samples"]) <= {"connection_dropped", "incomplete_stream"}
    assert stage["error_samples"]
