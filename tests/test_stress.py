"""Stress: 2,000 concurrent streams, and (slow tier) memory that stays flat over a soak."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import psutil
import pytest


def loadbench_run(*args: str | Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadbench", "run", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX open-file limits")
def test_two_thousand_streams_at_once(write_scenario: Callable[..., Path], tmp_path: Path) -> None:
    path = write_scenario(
        """
        name = "c2000"
        [target]
        timeout_s = 60
        [target.simulate]
        ttft_ms = 50
        itl_ms = 20
        slots = 2000
        batch_itl_factor = 0
        [[models]]
        name = "sim-model"
        [prompts]
        items = ["hi"]
        [request]
        max_tokens = 4
        [load]
        concurrency = [2000]
        requests = 2000
        """
    )
    out = tmp_path / "r.json"
    proc = loadbench_run(path, "-o", out, "-q", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (stage,) = orjson.loads(out.read_bytes())["stages"]
    assert stage["requests"] == {"sent": 2000, "ok": 2000, "failed": 0, "warmup": 0}
    assert stage["tokens"]["output"] == 8000


@pytest.mark.slow
def test_memory_stays_flat_over_a_soak(write_scenario: Callable[..., Path], tmp_path: Path) -> None:
    """60 s at 150 requests/s: RSS after 20 s and at the end differ by less than 25 MB."""
    path = write_scenario(
        """
        name = "soak"
        [target.simulate]
        ttft_ms = 5
        itl_ms = 2
        slots = 256
        [[models]]
        name = "sim-model"
        [prompts]
        items = ["a b c", "d e f g"]
        [request]
        max_tokens = 16
        [load]
        rate = [150.0]
        duration_s = 60
        """
    )
    out = tmp_path / "r.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadbench",
            "run",
            str(path),
            "-o",
            str(out),
            "-q",
            "--records",
            str(tmp_path / "r.jsonl"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    watched = psutil.Process(proc.pid)
    samples: list[float] = []
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(5)
            if proc.poll() is None:
                samples.append(watched.memory_info().rss / 2**20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    stage = orjson.loads(out.read_bytes())["stages"][0]
    assert stage["requests"]["sent"] > 8000
    early, late = samples[3], samples[-1]  # after ~20 s, and near the end
    print(f"soak RSS MB every 5 s: {[round(s, 1) for s in samples]}")
    assert late - early < 25, samples
