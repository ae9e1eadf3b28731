"""The command line end to end: real subprocesses, real simulator, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from click.testing import CliRunner

from loadbench.cli import main
from loadbench.metrics import decode
from loadbench.results.file import schema
from loadbench.sim.server import SimConfig, simulator_process

TINY = """
    name = "tiny"
    [target]
    api_key_env = "LB_TEST_KEY"
    [target.simulate]
    ttft_ms = 5
    itl_ms = 1
    slots = 4
    [[models]]
    name = "sim-model"
    [prompts]
    items = ["hello there", "general kenobi"]
    [request]
    max_tokens = 8
    [load]
    concurrency = [1, 4]
    requests = 8
    warmup = 1
    seed = 1
"""


def loadbench(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# Runs the CLI as ``python -m loadbench`` does, with SIGINT set as a foreground shell would
# leave it ("default") or as a shell leaves it for a background job ("ignore"), whatever
# pytest itself was started with. The ready file is touched once the imports are done: a
# signal before that lands in the interpreter's start-up, which is not the CLI's to handle.
_CLI_WITH_SIGINT = """
import pathlib, signal, sys
import loadbench.cli
mode, ready, *args = sys.argv[1:]
signal.signal(signal.SIGINT, signal.SIG_IGN if mode == "ignore" else signal.default_int_handler)
pathlib.Path(ready).touch()
loadbench.cli.main(args, prog_name="loadbench")
"""


def start_cli(
    args: list[str], ready: Path, *, sigint: str = "default", **popen: Any
) -> subprocess.Popen[str]:
    """``loadbench *args`` in a child, returned once it is ready for a signal."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI_WITH_SIGINT, sigint, str(ready), *args], text=True, **popen
    )
    deadline = time.monotonic() + 30
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ready.exists(), f"the CLI did not start (exit code {proc.poll()})"
    return proc


def wait_for_stage(log: Path, proc: subprocess.Popen[str], timeout_s: float = 60) -> None:
    """Until the run's stderr (a file: not a terminal, so plain progress lines every few
    seconds) shows a stage under way: a moment to wait for, not to guess on a loaded
    machine."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        if "stage 1/" in log.read_text(encoding="utf-8", errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"no stage started (exit code {proc.poll()}):\n{log.read_text()}")


def assert_partial(path: Path) -> dict[str, object]:
    """The result file of an interrupted run: there, valid, and marked."""
    assert path.exists(), "an interrupted run wrote no partial result file"
    doc = read(path)
    jsonschema.validate(doc, schema())
    assert doc["interrupted"] is True
    stages = doc["stages"]
    assert isinstance(stages, list)
    for stage in stages:
        req = stage["requests"]
        assert req["sent"] == req["ok"] + req["failed"]
    return doc


def read(path: Path) -> dict[str, object]:
    doc = orjson.loads(path.read_bytes())
    assert isinstance(doc, dict)
    return doc


def test_run_writes_a_valid_result_and_a_summary(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    key = "sk-never-in-any-file-42"
    proc = loadbench(
        "run",
        str(write_scenario(TINY)),
        "-o",
        str(out),
        "--records",
        str(tmp_path / "r.jsonl"),
        "--report-dir",
        str(tmp_path / "report"),
        env={"LB_TEST_KEY": key},
    )
    assert proc.returncode == 0, proc.stderr
    doc = read(out)
    jsonschema.validate(doc, schema())
    assert doc["interrupted"] is False
    stages = doc["stages"]
    assert isinstance(stages, list)
    assert [s["label"] for s in stages] == ["c=1", "c=4"]
    for stage in stages:
        req = stage["requests"]
        assert req["sent"] == req["ok"] + req["failed"] == 8
        assert req["failed"] == sum(stage["errors"].values())
        assert stage["tokens"] == {"output": 64, "counted_by": "usage"}
        for name, blob in stage["histograms"].items():
            assert decode(blob).get_total_count() == stage["latency_ms"][name]["count"]
    target = doc["target"]
    assert isinstance(target, dict)
    assert target["simulated"] is True
    assert doc["scenario"]["target"]["api_key_env"] == "LB_TEST_KEY"  # type: ignore[index]
    assert "c=4" in proc.stdout
    assert "results:" in proc.stdout
    artefacts = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert len(artefacts) >= 5  # scenario, result, records, report, plots
    for blob in [*artefacts, proc.stdout.encode(), proc.stderr.encode()]:
        assert key.encode() not in blob


def test_command_line_overrides_and_an_external_server(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    with simulator_process(SimConfig(ttft_ms=2, itl_ms=1)) as sim:
        proc = loadbench(
            "run",
            str(write_scenario(TINY)),
            "-o",
            str(out),
            "--base-url",
            sim.base_url,
            "--model",
            "other",
            "--rate",
            "50,100",
            "--requests",
            "5",
            "-q",
        )
    assert proc.returncode == 0, proc.stderr
    doc = read(out)
    target = doc["target"]
    assert isinstance(target, dict)
    assert target["simulated"] is False  # --base-url beats [target.simulate]
    assert target["base_url"] == sim.base_url
    assert target["server_pid"] in (sim.pid, None)  # found by its listening port, where allowed
    stages = doc["stages"]
    assert isinstance(stages, list)
    assert [(s["model"], s["mode"], s["rate"]) for s in stages] == [
        ("other", "rate", 50.0),
        ("other", "rate", 100.0),
    ]
    assert all(s["requests"]["sent"] == 5 for s in stages)
    assert "schedule_lag" in stages[0]["latency_ms"]


def test_bad_scenario_exits_2_listing_every_problem(write_scenario: Callable[..., Path]) -> None:
    path = write_scenario(
        """
        [target]
        base_url = "http://127.0.0.1:9/v1"
        [[models]]
        name = "m"
        [prompts]
        items = ["x"]
        [load]
        concurency = [1]
        rate = [-3]
        requests = 4
        """
    )
    proc = loadbench("run", str(path))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"Error: {path}: load.rate[0]: expected a positive number, got -3" in proc.stderr
    assert "did you mean 'concurrency'" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "--concurrency"),
        (["--rate", "fast"], "--rate"),
        (["--requests", "-1"], "--requests"),
    ],
)
def test_bad_options_exit_2(
    write_scenario: Callable[..., Path], args: list[str], message: str
) -> None:
    result = CliRunner().invoke(main, ["run", str(write_scenario(TINY)), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_scenario_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "nope.toml" in result.output


def test_unreachable_target_exits_3(write_scenario: Callable[..., Path]) -> None:
    proc = loadbench("run", str(write_scenario(TINY)), "--base-url", "http://127.0.0.1:9/v1")
    assert proc.returncode == 3
    assert "cannot reach http://127.0.0.1:9/v1" in proc.stderr
    assert "Traceback" not in proc.stderr


SLOW = TINY.replace("itl_ms = 1", "itl_ms = 200").replace("requests = 8", "requests = 200")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(
    ("sig", "sigint"),
    [(signal.SIGINT, "default"), (signal.SIGTERM, "default"), (signal.SIGINT, "ignore")],
    ids=["sigint", "sigterm", "sigint-started-ignored"],
)
def test_a_signal_writes_partial_results_and_exits_130(
    write_scenario: Callable[..., Path], tmp_path: Path, sig: signal.Signals, sigint: str
) -> None:
    """Started with SIGINT ignored, as a shell script starts ``loadbench run … &``, the
    run still obeys ``kill -INT``."""
    out, log = tmp_path / "partial.json", tmp_path / "stderr.txt"
    with log.open("w") as stderr_file:
        proc = start_cli(
            ["run", str(write_scenario(SLOW)), "-o", str(out)],
            tmp_path / "ready",
            sigint=sigint,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
        )
    try:
        wait_for_stage(log, proc)
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    stderr = log.read_text()
    assert proc.returncode == 130, stderr
    doc = assert_partial(out)
    stages = doc["stages"]
    assert isinstance(stages, list)
    assert stages[-1]["interrupted"] is True
    assert "partial results written" in stderr


def test_every_command_has_help() -> None:
    for command in main.commands:
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0
        assert "Usage:" in result.output


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("after_s", [0.3, 1.0, 2.0])
def test_a_signal_at_any_moment_exits_130_without_a_traceback(
    write_scenario: Callable[..., Path], tmp_path: Path, after_s: float
) -> None:
    """Start-up, simulator start, warmup: whatever was running, the exit is clean, and the
    partial file is there exactly when the CLI says it wrote one."""
    out = tmp_path / "early.json"
    proc = start_cli(
        ["run", str(write_scenario(SLOW)), "-o", str(out)],
        tmp_path / "ready",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(after_s)
        proc.send_signal(signal.SIGINT)
        _out, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    if "interrupted before the first request: no results written" in stderr:
        assert not out.exists()
    else:  # the engine had started: what it had is there, marked
        assert "interrupted: partial results written" in stderr
        assert_partial(out)
