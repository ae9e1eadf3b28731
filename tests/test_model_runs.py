"""Runs that compare models, against simulators serving several names: names resolved to
the ids served, a model not served skipped, a broken one failed after its warm-up, the
others completed; --fail-fast; exit 1 when none completes; per-model targets; the API key
on /v1/models; the workshop's BENCH_* variables; bad input exits 2 before any request."""

from __future__ import annotations

import contextlib
import io
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
from rich.console import Console

from loadbench.observe.monitor import ClientMonitor
from loadbench.report.plots import plot_images
from loadbench.results import load_result
from loadbench.run.progress import short_reason, summary_table
from loadbench.sim.faults import SimConfig
from loadbench.sim.process import simulator_process
from loadbench.sim.served import SimModel, model_args
from tests.conftest import threaded_server

QWEN = "qwen2.5-0.5b-instruct-generic-cpu:4"
ANSWER = "Retrieval finds a document, then generation answers."
PROMPTS = [
    {"id": "rag", "prompt": "Explain RAG.", "aspects": ["retrieval", "generation", "document"]},
    {"id": "local", "prompt": "Why local?", "aspects": ["privacy"]},
]
LOAD = """
[request]
max_tokens = 6
[load]
concurrency = [1, 2]
requests = 4
warmup = 1
"""


@contextlib.contextmanager
def served(*models: SimModel, broken: tuple[str, ...] = ()) -> Iterator[str]:
    """A simulator serving these models, started as ``python -m loadbench.sim.server``."""
    command = [sys.executable, "-m", "loadbench.sim.server", "--ttft-ms", "5", "--itl-ms", "1"]
    with simulator_process(SimConfig(), command=[*command, *model_args(models, broken)]) as h:
        yield h.base_url


def loadbench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "LOADBENCH_"))}
    clean.pop("OPENAI_BASE_URL", None)
    clean.pop("FOUNDRY_LOCAL_ENDPOINT", None)
    return subprocess.run(
        [sys.executable, "-m", "loadbench", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


def scenario(tmp_path: Path, url: str, models: str, extra: str = "") -> Path:
    (tmp_path / "prompts.json").write_text(json.dumps(PROMPTS), encoding="utf-8")
    path = tmp_path / "s.toml"
    path.write_text(
        f'name = "pick"\n[target]\nbase_url = "{url}"\n{models}\n'
        f'[prompts]\nfile = "prompts.json"\n{LOAD}{extra}',
        encoding="utf-8",
    )
    return path


def run(path: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    out = tmp_path / "r.json"
    proc = loadbench("run", str(path), "-q", "-o", str(out), "--overwrite", *args, env=env)
    doc = load_result(out) if out.exists() else None
    return proc, doc


def blocks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in doc["models"]}


def test_unserved_models_are_skipped_broken_ones_fail_and_the_rest_complete(
    tmp_path: Path,
) -> None:
    models = "\n".join(
        f'[[models]]\nname = "{n}"' for n in ("qwen2.5-0.5b", "phi-3.5-mini", "absent")
    )
    extra = "[cost]\ndevice_watts = 40\nprice_per_kwh = 0.25\n"
    with served(
        SimModel(QWEN, answer=ANSWER), SimModel("phi-3.5-mini"), broken=("phi-3.5-mini",)
    ) as url:
        proc, doc = run(scenario(tmp_path, url, models, extra), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"qwen2.5-0.5b -> {QWEN}" in proc.stderr
    got = blocks(doc)
    ok, broken, absent = got["qwen2.5-0.5b"], got["phi-3.5-mini"], got["absent"]
    assert (ok["status"], ok["served_as"], ok["reason"]) == ("ok", QWEN, None)
    assert [s["prompt_id"] for s in ok["samples"]] == ["rag", "local"]
    assert ok["samples"][0]["answer"].startswith("Retrieval finds a document")
    assert ok["quality"]["method"] == "heuristic"
    assert [s["score"] for s in ok["quality"]["scores"]] == [5.0, 1.0]
    assert ok["cost"]["watts_source"] == "declared"
    assert set(ok["cost"]["per_million_output_tokens"]) == {"c=1", "c=2"}
    assert broken["status"] == "failed"
    assert broken["reason"].startswith("every warm-up request failed at c=1 (http_500")
    assert absent["status"] == "skipped"
    assert absent["reason"].startswith(f"not listed by {url} (it lists {QWEN}, phi-3.5-mini)")
    labels = [(s["model"], s["label"]) for s in doc["stages"]]
    # the broken model's first stage stopped after its warm-up; its second never ran
    assert labels == [("qwen2.5-0.5b", "c=1"), ("qwen2.5-0.5b", "c=2"), ("phi-3.5-mini", "c=1")]
    assert doc["stages"][2]["stopped"] == "warmup_failed"
    assert [s["requests"]["sent"] for s in doc["stages"][:2]] == [4, 4]  # samples kept out
    assert "phi-3.5-mini" in proc.stdout
    assert "every warm-up request failed" in proc.stdout
    # After the table, the failed model's status and reason, not "no knee" over no figures.
    assert "phi-3.5-mini: failed: every warm-up request failed at c=1" in proc.stdout
    assert "phi-3.5-mini: no knee" not in proc.stdout
    # Its warm-up-only stage measured nothing: its client CPU is not judged.
    assert doc["stages"][2]["client"]["bottleneck"] is False
    assert all("phi-3.5-mini c=1" not in w for w in doc["warnings"])
    # No spectrum for a model without an ok request (it drew an empty legend, a warning).
    names = set(plot_images([("r", doc)]))
    spectra = {n for n in names if n.startswith("spectrum-")}
    assert len(spectra) == 1
    assert "qwen" in spectra.pop()


def test_a_long_reason_is_cut_in_the_summary_table_and_kept_whole_elsewhere() -> None:
    reason = "not listed by http://127.0.0.1:1/v1 (it lists " + ", ".join(
        f"model-{i}-instruct-generic-cpu:1" for i in range(12)
    )
    assert short_reason(reason) == reason[:59] + "…"
    assert short_reason("short") == "short"
    assert short_reason(None) == "-"
    out = Console(width=200, file=io.StringIO(), record=True)
    out.print(summary_table([], [{"name": "absent", "status": "skipped", "reason": reason}]))
    text = out.export_text()
    assert "model-11" not in text
    assert len([line for line in text.splitlines() if line.startswith("│")]) <= 4


def test_a_stage_without_measured_requests_is_never_judged_client_bound() -> None:
    monitor = ClientMonitor()
    monitor.start()
    spin_until = time.perf_counter() + 0.05
    while time.perf_counter() < spin_until:  # a busy client, as a warm-up burst can look
        pass
    health = monitor.finish(measured=False)
    assert health.cpu_percent > 0
    assert (health.bottleneck, health.warning, health.label) == (False, None, None)


def test_fail_fast_stops_at_the_first_failure_and_exits_1(tmp_path: Path) -> None:
    models = '[[models]]\nname = "broken"\n[[models]]\nname = "good"'
    with served(SimModel("good"), SimModel("broken"), broken=("broken",)) as url:
        proc, doc = run(scenario(tmp_path, url, models), tmp_path, "--fail-fast")
    assert proc.returncode == 1, proc.stderr
    got = blocks(doc)
    assert got["broken"]["status"] == "failed"
    assert got["good"]["status"] == "skipped"
    assert got["good"]["reason"] == "not run: --fail-fast after broken was failed"
    assert {s["model"] for s in doc["stages"]} == {"broken"}


def test_every_model_skipped_or_failed_exits_1_with_the_results_written(tmp_path: Path) -> None:
    models = '[[models]]\nname = "broken"\n[[models]]\nname = "nowhere"'
    with served(SimModel("good"), SimModel("broken"), broken=("broken",)) as url:
        proc, doc = run(scenario(tmp_path, url, models), tmp_path)
    assert proc.returncode == 1
    assert "every model was skipped or failed" in proc.stderr
    assert [m["status"] for m in doc["models"]] == ["failed", "skipped"]


def test_each_model_on_its_own_server(tmp_path: Path) -> None:
    with (
        served(SimModel("fast", ttft_ms=5)) as fast,
        served(SimModel("slow", ttft_ms=120)) as slow,
    ):
        models = f'[[models]]\nname = "fast"\n[[models]]\nname = "slow"\nbase_url = "{slow}"'
        proc, doc = run(scenario(tmp_path, fast, models, '[quality]\nmethod = "none"\n'), tmp_path)
    assert proc.returncode == 0, proc.stderr
    ttft = {
        s["model"]: s["latency_ms"]["ttft"]["p50"] for s in doc["stages"] if s["label"] == "c=1"
    }
    assert ttft["fast"] < 60 < ttft["slow"]
    assert [m["quality"] for m in doc["models"]] == [None, None]
    assert doc["scenario"]["model_targets"]["slow"]["base_url"] == slow


class _Keyed(BaseHTTPRequestHandler):
    """Lists and answers only with ``Authorization: Bearer sekrit`` (vLLM --api-key)."""

    def _ok(self) -> bool:
        if self.headers.get("authorization") == "Bearer sekrit":
            return True
        self.send_response(401)
        self.send_header("content-length", "0")
        self.end_headers()
        return False

    def _send(self, ctype: str, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self._ok():
            self._send("application/json", b'{"object":"list","data":[{"id":"keyed-model"}]}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        if self._ok():
            event = orjson.dumps({"choices": [{"delta": {"content": "hello"}}]})
            self._send("text/event-stream", b"data: " + event + b"\n\ndata: [DONE]\n\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def keyed() -> Iterator[str]:
    with threaded_server(_Keyed) as url:
        yield url


def test_the_key_goes_with_the_model_list(tmp_path: Path) -> None:
    with keyed() as url:
        # The key named by the model's own entry, none on [target]: listed and answered.
        models = '[[models]]\nname = "keyed-model"\napi_key_env = "LB_MODEL_KEY"'
        path = scenario(tmp_path, url, models, '[quality]\nmethod = "none"\nsamples = false\n')
        proc, doc = run(path, tmp_path, env={"LB_MODEL_KEY": "sekrit"})
        assert proc.returncode == 0, proc.stderr
        assert blocks(doc)["keyed-model"]["status"] == "ok"
        assert doc["stages"][0]["requests"]["ok"] == 4
        # Without it, the 401 on /v1/models is said, not taken for "no list".
        proc, doc = run(path, tmp_path)
    assert proc.returncode == 1
    assert any("HTTP 401 (is an API key needed?" in w for w in doc["warnings"])
    assert blocks(doc)["keyed-model"]["status"] == "failed"


def test_the_workshop_variables_apply_and_are_recorded(tmp_path: Path) -> None:
    with served(SimModel("a"), SimModel("b")) as url:
        path = scenario(tmp_path, url, '[[models]]\nname = "a"', '[quality]\nmethod = "none"\n')
        env = {"BENCH_MODELS": "b", "BENCH_ROUNDS": "3", "BENCH_PROMPT": "Say hi."}
        proc, doc = run(path, tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert doc["scenario"]["env_applied"] == env
    assert [m["name"] for m in doc["models"]] == ["b"]
    assert [s["requests"]["sent"] for s in doc["stages"]] == [3, 3]  # 3 rounds x 1 prompt
    assert [s["prompt_id"] for s in doc["models"][0]["samples"]] == ["p1"]


def test_bad_input_exits_2_before_any_load(tmp_path: Path) -> None:
    ambiguous = (SimModel("qwen2.5-0.5b-instruct-cpu:1"), SimModel("qwen2.5-0.5b-coder-cpu:1"))
    with served(*ambiguous) as url:
        path = scenario(tmp_path, url, '[[models]]\nname = "qwen2.5-0.5b"')
        proc, doc = run(path, tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "model 'qwen2.5-0.5b' is ambiguous" in proc.stderr
        assert doc is None
        proc, _ = run(path, tmp_path, "--capability", "vision")
        assert proc.returncode == 2
        assert "--capability vision: no model of the scenario has it" in proc.stderr
        catalog = scenario(
            tmp_path, url, '[[models]]\nname = "x"', '[models_catalog]\nfile = "m.json"\n'
        )
        (tmp_path / "m.json").write_text('{"x": {"size_mb": "big"}}', encoding="utf-8")
        proc, _ = run(catalog, tmp_path)
        assert proc.returncode == 2
        assert "m.json: x.size_mb: expected a number >= 0, got 'big'" in proc.stderr
