"""The stream-delivery diagnosis against a real engine, llama.cpp's llama-server: what it
says there, so that the docs' "which servers show a stall" is a measured claim.

llama-server (cpp-httplib) closes the connection after every streamed response while it
announces keep-alive, so no request ever reuses one: every request is a connection's first
(fresh), none is reused, and there is nothing to stall. Its tokens are written one SSE event
at a time as they are made, so the streams do not arrive in one burst either. Same server
and skip rules as tests/test_real.py (marker ``real``; ``make test-real`` builds it first).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.real

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "llama_server.sh"


def _script(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A llama-server of our own on a free port (never one ``make real-server`` started)."""
    run_dir = tmp_path_factory.mktemp("llama-server")
    env = {**os.environ, "LLAMA_SERVER_RUN_DIR": str(run_dir)}
    binary = Path(_script("path", env=env, timeout=10).stdout.strip()) / "bin" / "llama-server"
    if not binary.is_file():
        reason = f"no llama-server at {binary}: `make test-real` builds it (6-12 min on 2 cores)"
        if os.environ.get("LOADBENCH_REAL_REQUIRED"):
            pytest.fail(f"LOADBENCH_REAL_REQUIRED is set and there is {reason}")
        pytest.skip(reason)
    args = ("--port", str(_free_port()), "--slots", "4", "--threads", "1")
    try:
        started = _script("start", *args, env=env, timeout=240)
        assert started.returncode == 0, f"llama_server.sh start failed:\n{started.stderr}"
        yield started.stdout.strip().splitlines()[-1]
    finally:
        _script("stop", env=env, timeout=60)


def _run(url: str, tmp_path: Path, *options: str) -> tuple[dict[str, Any], str]:
    scenario = tmp_path / "delivery.toml"
    scenario.write_text(
        f"""name = "delivery"
[target]
base_url = "{url}"
timeout_s = 60
[[models]]
name = "smollm2"
[prompts]
items = ["Say hello in five words.", "What is a load test?"]
[request]
max_tokens = 16
temperature = 0
extra = {{ ignore_eos = true }}
[load]
concurrency = [1, 4]
requests = 8
warmup = 1
""",
        encoding="utf-8",
    )
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "loadbench", "run", str(scenario), "-q", "-o", str(out), *options],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    doc: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return doc, proc.stderr


@pytest.mark.timeout(300)
def test_llama_server_closes_every_connection_so_every_request_is_fresh_and_none_stalls(
    url: str, tmp_path: Path
) -> None:
    doc, stderr = _run(url, tmp_path)
    for stage in doc["stages"]:
        delivery = stage["delivery"]
        assert stage["requests"]["ok"] == 8, stage["errors"]
        # Warm-up included: each of the 9 requests was its connection's first.
        assert (delivery["fresh"], delivery["reused"]) == (9, 0), (stage["label"], delivery)
        assert delivery["ttft_reused_p50_ms"] is None
        assert "keepalive_stall" not in [v["kind"] for v in delivery["verdicts"]]
    assert "keep-alive stall" not in stderr
