"""`loadbench run --workers`: the command line over the workers room (tests/test_workers.py
covers the room itself: shards, merge, lost workers, Ray)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson

from loadbench.results.file import load_result

SCENARIO = """
[target.simulate]
ttft_ms = 5
itl_ms = 1
slots = 16
seed = 3
[[models]]
name = "sim-model"
[prompts]
items = ["one", "two", "three"]
[request]
max_tokens = 4
[load]
concurrency = [3, 8]
requests = 24
warmup = 1
"""


def loadbench(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadbench", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_two_workers_write_one_ordinary_result(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    proc = loadbench("run", write_scenario(SCENARIO), "--workers", "2", "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr
    doc = load_result(out)  # checked against the schema
    assert doc["workers"]["count"] == 2
    assert doc["workers"]["degraded"] is False
    for stage in doc["stages"]:
        req = stage["requests"]
        assert req["sent"] == req["ok"] == 24
        assert stage["latency_ms"]["ttft"]["count"] == 24  # merged histograms hold every one
        # The same blocks as a single process writes, merged from the workers' parts.
        assert stage["delivery"]["fresh"] + stage["delivery"]["reused"] == 24 + 1
        assert stage["connections"]["preopened"] >= 1
        assert len(stage["prompts"]["by_id"]) == 3
        assert sum(p["count"] for p in stage["prompts"]["by_id"].values()) == 24


def test_worker_options_are_checked_before_any_request(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_scenario(SCENARIO)
    bad = loadbench("run", path, "--workers", "0", "-o", tmp_path / "a.json", "-q")
    assert bad.returncode == 2
    assert "--workers" in bad.stderr
    records = loadbench(
        "run", path, "--workers", "2", "--records", tmp_path / "r.jsonl", "-o", tmp_path / "b.json"
    )
    assert records.returncode == 2
    assert "--records" in records.stderr
    ray = loadbench("run", path, "--ray", "auto", "-o", tmp_path / "c.json", "-q")
    assert ray.returncode == 2
    assert "Traceback" not in ray.stderr + bad.stderr + records.stderr
    assert not any((tmp_path / n).exists() for n in ("a.json", "b.json", "c.json"))


def test_a_single_worker_is_this_process(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    proc = loadbench("run", write_scenario(SCENARIO), "--workers", "1", "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "workers" not in orjson.loads(out.read_bytes())
