"""[target.launch]: loadbench starts the server, measures its cold start, and stops it.

The launched server is loadbench's own simulator in a real subprocess on a real port; the
failures are real programs that exit, hang or cannot be found.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from loadbench.errors import ScenarioError
from loadbench.run.launch import default_ready_url
from loadbench.scenario import load_scenario
from loadbench.scenario.model import redact_argv
from loadbench.sim.server import SimConfig, simulator_process
from tests.test_cli import assert_partial, start_cli, wait_for_stage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def scenario(port: int, command: list[str], extra: str = "") -> str:
    return f"""
        name = "launched"
        [target]
        base_url = "http://127.0.0.1:{port}/v1"
        timeout_s = 20
        [target.launch]
        command = {json.dumps(command)}
        ready_timeout_s = 30
        {extra}
        [[models]]
        name = "sim-model"
        [prompts]
        items = ["hello there"]
        [request]
        max_tokens = 8
        [load]
        concurrency = [1, 2]
        requests = 4
    """


def simulator(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "loadbench", "simulate", "--port", str(port), *extra]


def loadbench(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_launched_server_gets_a_cold_start_and_is_stopped_after(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    port = free_port()
    out = tmp_path / "r.json"
    proc = loadbench("run", str(write_scenario(scenario(port, simulator(port)))), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = orjson.loads(out.read_bytes())
    target = doc["target"]
    cold = target["cold_start"]
    assert cold["first_request"] == "ok"
    assert 0 < cold["ready_s"] < 30
    assert cold["first_request_ttft_s"] > 0
    assert cold["first_token_s"] == pytest.approx(cold["ready_s"] + cold["first_request_ttft_s"])
    assert target["launched"] == simulator(port)
    assert isinstance(target["server_pid"], int)
    # The probe is counted in cold_start, in no stage.
    assert [s["requests"]["sent"] for s in doc["stages"]] == [4, 4]
    assert "cold start: ready" in proc.stdout
    assert refused(port), "the launched server outlived the run"


def test_the_simulator_started_by_a_scenario_has_a_cold_start_too(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    body = """
        name = "sim"
        [target.simulate]
        ttft_ms = 5
        itl_ms = 1
        [[models]]
        name = "m"
        [prompts]
        items = ["hi"]
        [request]
        max_tokens = 4
        [load]
        concurrency = [1]
        requests = 2
    """
    out = tmp_path / "r.json"
    proc = loadbench("run", str(write_scenario(body)), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    cold = orjson.loads(out.read_bytes())["target"]["cold_start"]
    assert cold["first_request"] == "ok"
    assert cold["first_token_s"] > cold["ready_s"] > 0


def test_a_server_that_exits_is_exit_3_with_the_end_of_its_output(
    write_scenario: Callable[..., Path],
) -> None:
    port = free_port()
    command = [sys.executable, "-c", "print('model file not found: x.gguf'); raise SystemExit(4)"]
    proc = loadbench("run", str(write_scenario(scenario(port, command))))
    assert proc.returncode == 3, proc.stderr
    assert "exited with code 4" in proc.stderr
    assert "model file not found: x.gguf" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_server_never_ready_is_exit_3_and_is_stopped(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    port = free_port()
    pid_file = tmp_path / "pid"
    hang = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    body = scenario(port, [sys.executable, "-c", hang]).replace(
        "ready_timeout_s = 30", "ready_timeout_s = 1.5"
    )
    proc = loadbench("run", str(write_scenario(body)))
    assert proc.returncode == 3, proc.stderr
    assert "was not ready" in proc.stderr
    assert "within 1.5 s" in proc.stderr
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid), "the server that never got ready was left running"


def _alive(pid: int) -> bool:
    if sys.platform == "win32":
        import psutil

        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_a_program_that_cannot_start_is_exit_2(write_scenario: Callable[..., Path]) -> None:
    port = free_port()
    proc = loadbench("run", str(write_scenario(scenario(port, ["no-such-server-binary-xyz"]))))
    assert proc.returncode == 2, proc.stderr
    assert "target.launch.command: cannot start 'no-such-server-binary-xyz'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_something_already_on_the_port_is_exit_2_not_a_false_cold_start(
    write_scenario: Callable[..., Path],
) -> None:
    with simulator_process(SimConfig()) as sim:
        port = int(sim.base_url.rsplit(":", 1)[1].split("/")[0])
        proc = loadbench("run", str(write_scenario(scenario(port, simulator(port)))))
    assert proc.returncode == 2, proc.stderr
    assert "something already answers at" in proc.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_writes_partial_results_and_stops_the_server(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    port = free_port()
    body = scenario(port, simulator(port, "--ttft-ms", "50", "--itl-ms", "50")).replace(
        "requests = 4", "requests = 400"
    )
    out, log = tmp_path / "r.json", tmp_path / "stderr.txt"
    with log.open("w") as stderr_file:
        run = start_cli(
            ["run", str(write_scenario(body)), "-o", str(out)],
            tmp_path / "ready",
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
        )
    try:
        wait_for_stage(log, run)  # the server is up and has answered the first request
        run.send_signal(signal.SIGINT)
        run.wait(timeout=60)
    finally:
        run.kill()
    stderr = log.read_text()
    assert run.returncode == 130, stderr
    doc = assert_partial(out)
    assert doc["target"]["cold_start"]["first_request"] == "ok"
    assert refused(port), "the launched server outlived the interrupted run"


# -- the scenario section ------------------------------------------------------------------


def problems(write_scenario: Callable[..., Path], body: str) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write_scenario(body), env={})
    return info.value.message


@pytest.mark.parametrize(
    ("launch", "message"),
    [
        ('command = "llama-server -m x"', "target.launch.command: expected a non-empty list"),
        ("command = []", "target.launch.command: expected a non-empty list of strings"),
        ("command = [1, 2]", "target.launch.command: expected a non-empty list of strings"),
        ("ready_timeout_s = 5", "target.launch.command: expected a non-empty list of strings"),
        ('command = ["x"]\nready_timeout_s = 0', "target.launch.ready_timeout_s: expected a"),
        ('command = ["x"]\nready_url = "ftp://x"', "target.launch.ready_url: expected an http"),
        ('command = ["x"]\nwait = 3', "target.launch: unknown key 'wait'"),
    ],
)
def test_bad_launch_sections_name_the_field(
    write_scenario: Callable[..., Path], launch: str, message: str
) -> None:
    body = f"""
        [target]
        base_url = "http://127.0.0.1:9/v1"
        [target.launch]
        {launch}
        [[models]]
        name = "m"
        [prompts]
        items = ["hi"]
    """
    assert message in problems(write_scenario, body)


def test_launch_needs_a_base_url_and_excludes_the_simulator(
    write_scenario: Callable[..., Path],
) -> None:
    tail = '[[models]]\nname = "m"\n[prompts]\nitems = ["hi"]\n'
    no_url = '[target.launch]\ncommand = ["x"]\n' + tail
    assert "target.launch: expected target.base_url too" in problems(write_scenario, no_url)
    both = '[target.simulate]\n[target.launch]\ncommand = ["x"]\n' + tail
    assert "expected [target.simulate] or [target.launch], not both" in problems(
        write_scenario, both
    )


def test_the_resolved_scenario_hides_keys_given_on_the_command_line(
    write_scenario: Callable[..., Path],
) -> None:
    command = ["llama-server", "--api-key", "sk-secret-1", "--hf-token=hf_secret_2", "-m", "x"]
    loaded = load_scenario(write_scenario(scenario(9, command)), env={})
    shown = loaded.to_dict()["target"]["launch"]["command"]  # type: ignore[index]
    assert shown == ["llama-server", "--api-key", "***", "--hf-token=***", "-m", "x"]
    assert redact_argv(["--port", "1"]) == ("--port", "1")


def test_an_environment_url_means_nothing_is_launched(write_scenario: Callable[..., Path]) -> None:
    loaded = load_scenario(
        write_scenario(scenario(9, ["x"])), env={"LOADBENCH_BASE_URL": "http://10.0.0.1:8000"}
    )
    assert loaded.target.launch is None


def test_the_ready_url_defaults_to_health_beside_v1() -> None:
    assert default_ready_url("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/health"
    assert default_ready_url("http://h:1/api/v1/") == "http://h:1/api/health"
