"""Per-prompt figures (issue 10.6): per model and stage, each prompt's TTFT/E2E p50 and count
keyed by its id, outliers flagged by a stated rule, a note past 100 prompts, nothing for a
single prompt; and the report's per-prompt table.

The simulator's prefill does not depend on the prompt, so the slow prompt comes from a
small server of our own that answers one prompt late, over real sockets all the same."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import orjson

from loadbench.report.document import markdown
from loadbench.results import load_result
from loadbench.results.file import OUTLIER_RULE, _outliers
from loadbench.sim.faults import SimConfig
from loadbench.sim.process import simulator_process
from tests.conftest import threaded_server

PROMPTS = [
    {"id": "summary", "prompt": "Summarize the notes."},
    {"id": "rag", "prompt": "Explain RAG."},
    {"id": "local", "prompt": "Why local?"},
]


def loadbench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "LOADBENCH_"))}
    env.pop("OPENAI_BASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "loadbench", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def run(tmp_path: Path, url: str, prompts: list[Any], requests: int) -> dict[str, Any]:
    (tmp_path / "prompts.json").write_text(json.dumps(prompts), encoding="utf-8")
    path = tmp_path / "s.toml"
    path.write_text(
        f'name = "pp"\n[target]\nbase_url = "{url}"\n[[models]]\nname = "m"\n'
        '[prompts]\nfile = "prompts.json"\n[quality]\nmethod = "none"\nsamples = false\n'
        f"[request]\nmax_tokens = 4\n[load]\nconcurrency = [1]\nrequests = {requests}\n"
        "warmup = 0\n",
        encoding="utf-8",
    )
    out = tmp_path / "r.json"
    proc = loadbench("run", str(path), "-q", "-o", str(out), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    return load_result(out)


def test_a_prompt_set_gets_figures_per_prompt_id_and_a_report_table(tmp_path: Path) -> None:
    with simulator_process(SimConfig(ttft_ms=5, itl_ms=1, models=("m",))) as sim:
        doc = run(tmp_path, sim.base_url, PROMPTS, 6)
        single = run(tmp_path, sim.base_url, PROMPTS[:1], 2)
    stage = doc["stages"][0]
    figures = stage["prompts"]
    assert figures["outlier_rule"] == OUTLIER_RULE
    assert list(figures["by_id"]) == ["summary", "rag", "local"]  # the scenario's order
    # Shuffled rounds of every prompt: 6 requests over 3 prompts are 2 each.
    assert [f["count"] for f in figures["by_id"].values()] == [2, 2, 2]
    assert sum(f["count"] for f in figures["by_id"].values()) == stage["requests"]["ok"]
    for f in figures["by_id"].values():
        assert 0 < f["ttft_p50_ms"] <= f["e2e_p50_ms"]
    assert figures["median_p50_ms"]["ttft"] > 0
    report = markdown([("pp", doc)])
    assert "### Per prompt" in report
    assert "| prompt | n | c=1 |" in report
    # One prompt: the stage's own figures say it all; no block, no table.
    assert "prompts" not in single["stages"][0]
    assert "Per prompt" not in markdown([("one", single)])


class _SlowOnOnePrompt(BaseHTTPRequestHandler):
    """Streams one token at once, except for a prompt that says "slow": 150 ms late."""

    def do_GET(self) -> None:
        self._send("application/json", b'{"object":"list","data":[{"id":"m"}]}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if b"slow" in body:
            time.sleep(0.15)
        event = orjson.dumps({"choices": [{"delta": {"content": "hello"}}]})
        self._send("text/event-stream", b"data: " + event + b"\n\ndata: [DONE]\n\n")

    def _send(self, ctype: str, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def slow_on_one_prompt() -> Iterator[str]:
    with threaded_server(_SlowOnOnePrompt) as url:
        yield url


def test_a_slow_prompt_is_flagged_and_marked_in_the_report(tmp_path: Path) -> None:
    prompts = [*PROMPTS, {"id": "long", "prompt": "A slow one, please."}]
    with slow_on_one_prompt() as url:
        doc = run(tmp_path, url, prompts, 8)
    by_id = doc["stages"][0]["prompts"]["by_id"]
    assert by_id["long"]["outlier"] == ["ttft", "e2e"]
    assert by_id["long"]["ttft_p50_ms"] >= 150
    assert [by_id[p["id"]]["outlier"] for p in PROMPTS] == [[], [], []]
    report = markdown([("pp", doc)])
    row = next(line for line in report.splitlines() if line.startswith("| long |"))
    assert row.count("\\*") == 2  # both figures marked (escaped for Markdown)


def test_more_than_100_prompts_get_a_note_instead(tmp_path: Path) -> None:
    prompts = [f"Prompt number {i}." for i in range(101)]
    with slow_on_one_prompt() as url:
        doc = run(tmp_path, url, prompts, 2)
    note = "101 distinct prompts: per-prompt figures are kept for up to 100"
    assert doc["stages"][0]["prompts"] == {"note": note}
    assert f"{note}." in markdown([("pp", doc)])


def test_the_outlier_rule_by_value() -> None:
    # Three or more prompts: over 2x or under 0.5x the median of the p50s; 2x itself is not.
    assert _outliers({"a": 10.0, "b": 11.0, "c": 22.0}) == (11.0, set())
    assert _outliers({"a": 10.0, "b": 11.0, "c": 22.1, "d": 5.4}) == (10.5, {"c"})
    assert _outliers({"a": 10.0, "b": 10.0, "c": 4.9}) == (10.0, {"c"})
    # Two prompts: their median is their mean, so one would always look far: no flags.
    assert _outliers({"a": 1.0, "b": 100.0}) == (50.5, set())
    # No figure (no token streamed) is left out of the median, never counted as 0.
    assert _outliers({"a": None, "b": 3.0, "c": 3.0, "d": 9.0}) == (3.0, {"d"})
    assert _outliers({"a": None}) == (None, set())
