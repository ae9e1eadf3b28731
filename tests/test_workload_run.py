"""`loadbench run` with a ``[workload]``, end to end against the simulator over real sockets.

The simulator tokenizes by whitespace words and answers ``POST /tokenize``, so the
workload's prompts are sized exactly and its ``usage`` confirms them: lengths are compared
for equality, not within a tolerance. Timings are checked against what the simulator's
settings make computable (its prefill per token, its prefix cache), with wide margins.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from loadbench.cli import main

DATA = Path(__file__).resolve().parent.parent / "scenarios" / "data"
SCENARIOS = DATA.parent


def run(tmp_path: Path, text: str, *args: str, exit_code: int = 0) -> dict[str, Any]:
    path = tmp_path / "w.toml"
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        main, ["run", str(path), "-o", str(out), "--overwrite", "-q", *args]
    )
    assert result.exit_code == exit_code, result.output
    if exit_code == 2:
        assert not out.exists()
        return {"output": result.output}
    doc: dict[str, Any] = json.loads(out.read_text())
    doc["output"] = result.output
    return doc


SIM = """\
name = "w"
[target.simulate]
ttft_ms = 10
itl_ms = 2
{sim}
[[models]]
name = "sim-model"
"""


def test_synthetic_lengths_are_asked_sent_and_measured_exactly(tmp_path: Path) -> None:
    doc = run(
        tmp_path,
        SIM.format(sim="slots = 8")
        + "[workload]\ninput_tokens = 120\noutput_tokens = 12\nignore_eos = true\n"
        "[load]\nconcurrency = [2]\nrequests = 6\n",
    )
    (stage,) = doc["stages"]
    lengths = stage["lengths"]
    assert lengths["ok"] == 6
    assert lengths["approximate"] is False
    assert "/tokenize" in lengths["tokenizer"]
    assert lengths["input_tokens"] == {
        "requested_mean": 120.0,
        "counted_mean": 120.0,
        "measured_mean": 120.0,
    }
    assert lengths["output_tokens"]["requested_mean"] == 12.0
    assert lengths["output_tokens"]["measured_mean"] == 12.0
    assert lengths["osl_mismatch"] == 0.0
    assert doc["scenario"]["workload"]["input_tokens"] == {"dist": "fixed", "value": 120}
    assert "workload prompts sized by" in doc["output"]


def test_an_early_stopping_server_shows_as_osl_mismatch(tmp_path: Path) -> None:
    doc = run(
        tmp_path,
        SIM.format(sim="slots = 8\nearly_stop_rate = 1.0\nseed = 3")
        + "[workload]\ninput_tokens = 20\noutput_tokens = 16\n"
        "[load]\nconcurrency = [2]\nrequests = 8\n",
    )
    lengths = doc["stages"][0]["lengths"]
    assert lengths["osl_mismatch"] == 1.0
    assert lengths["output_tokens"]["measured_mean"] < 16
    (warning,) = [w for w in doc["warnings"] if "OSL mismatch" in w]
    assert warning.startswith("sim-model c=2: 100% of answers stopped short of max_tokens")


def test_the_same_seed_sends_the_same_requests(tmp_path: Path) -> None:
    text = (
        SIM.format(sim="slots = 8")
        + "[workload]\ninput_tokens = {{ dist = 'uniform', min = 10, max = 200 }}\n"
        "output_tokens = {{ dist = 'uniform', min = 2, max = 9 }}\nseed = {seed}\n"
        "[load]\nconcurrency = [3]\nrequests = 9\n"
    )

    def figures(seed: int) -> tuple[object, ...]:
        ln = run(tmp_path, text.format(seed=seed))["stages"][0]["lengths"]
        return (ln["input_tokens"]["measured_mean"], ln["output_tokens"]["requested_mean"])

    first = figures(1)
    assert figures(1) == first
    assert figures(2) != first


def test_session_turns_carry_their_history_and_a_prefix_cache_hit_shows(
    tmp_path: Path,
) -> None:
    """Prefill costs 1 ms a token: without the cache, turn 3's ~200-token prompt would take
    about 200 ms to its first token; with it only the new tokens pay."""
    doc = run(
        tmp_path,
        SIM.format(sim="slots = 8\nprefill_ms_per_token = 1.0\nprefix_cache = true")
        + "[workload]\ninput_tokens = 60\noutput_tokens = 4\nignore_eos = true\n"
        "sessions = { turns = 3 }\n[load]\nconcurrency = [2]\nrequests = 12\n",
    )
    turns = doc["stages"][0]["lengths"]["turns"]
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert all(t["ok"] == 4 for t in turns)
    prompts = [t["prompt_tokens_mean"] for t in turns]
    # Each turn carries the questions and answers before it: 60 + 4 more per turn, at least.
    assert prompts[1] >= prompts[0] + 64
    assert prompts[2] >= prompts[1] + 64
    assert turns[0]["cached_tokens_mean"] == 0
    assert turns[2]["cached_tokens_mean"] >= 100
    uncached_estimate = 10 + prompts[2] * 1.0
    assert turns[2]["ttft_ms"]["p50"] < 0.7 * uncached_estimate


def test_a_trace_is_replayed_at_its_recorded_times(tmp_path: Path) -> None:
    shutil.copy(DATA / "sample-trace.jsonl", tmp_path / "trace.jsonl")
    records = tmp_path / "records.jsonl"
    doc = run(
        tmp_path,
        SIM.format(sim="slots = 32")
        + "[workload]\ntrace = { file = 'trace.jsonl', speedup = 2.0 }\noutput_tokens = 4\n"
        "[load]\nrequests = 12\n",
        "--speedup",
        "8",
        "--records",
        str(records),
    )
    (stage,) = doc["stages"]
    assert stage["label"] == "trace x8"
    assert stage["requests"]["ok"] == 12
    lines = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    want = [(e["timestamp_ms"] - lines[0]["timestamp_ms"]) / 8 for e in lines[:12]]
    got = [json.loads(line) for line in records.read_text().splitlines()]
    due = sorted(r["due_ms"] for r in got)
    assert [d - due[0] for d in due] == pytest.approx(want, abs=0.01)
    lag = stage["latency_ms"]["schedule_lag"]
    assert all(r["sent_ms"] - r["due_ms"] <= lag["max"] + 0.01 for r in got)
    assert stage["lengths"]["input_tokens"]["measured_mean"] == pytest.approx(
        sum(e["input_tokens"] for e in lines[:12]) / 12, abs=0.01
    )


def test_a_ramp_is_left_out_of_the_figures(tmp_path: Path) -> None:
    doc = run(
        tmp_path,
        SIM.format(sim="slots = 8") + "[workload]\ninput_tokens = 8\noutput_tokens = 2\n"
        "[load]\nrate = [40]\nrequests = 10\nramp_s = 0.5\n",
    )
    (stage,) = doc["stages"]
    assert stage["requests"]["sent"] == 10
    # A linear ramp to 40/s over 0.5 s holds about 40 * 0.5 / 2 = 10 arrivals.
    assert 8 <= stage["requests"]["warmup"] <= 12
    assert doc["scenario"]["load"]["ramp_s"] == 0.5


def test_a_closed_loop_ramp_warms_up_then_measures_the_count(tmp_path: Path) -> None:
    doc = run(
        tmp_path,
        SIM.format(sim="slots = 8") + "[workload]\ninput_tokens = 8\noutput_tokens = 2\n"
        "[load]\nconcurrency = [4]\nrequests = 12\nramp_s = 0.3\n",
    )
    (stage,) = doc["stages"]
    assert stage["requests"]["sent"] == 12
    assert stage["requests"]["warmup"] >= 1


def test_a_dataset_sends_its_own_prompts(tmp_path: Path) -> None:
    shutil.copy(DATA / "sample.jsonl", tmp_path / "d.jsonl")
    doc = run(
        tmp_path,
        SIM.format(sim="slots = 8")
        + "[workload]\ndataset = { file = 'd.jsonl', format = 'jsonl' }\n"
        "[load]\nconcurrency = [2]\nrequests = 12\n",
    )
    lengths = doc["stages"][0]["lengths"]
    entries = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert lengths["input_tokens"]["requested_mean"] is None  # the file's own prompts
    assert lengths["input_tokens"]["counted_mean"] == lengths["input_tokens"]["measured_mean"]
    asked = [e.get("output_tokens", 128) for e in entries]
    assert min(asked) <= lengths["output_tokens"]["requested_mean"] <= max(asked)


@pytest.mark.parametrize(
    ("load", "args", "message"),
    [
        ("concurrency = [1]", (), "expected no concurrency, rate, search or ramp_s"),
        ("requests = 3", ("--rate", "2"), "--rate and --concurrency do not apply"),
        ("requests = 3", ("--speedup", "0"), "--speedup: expected a number above 0"),
    ],
)
def test_a_trace_refuses_another_schedule(
    tmp_path: Path, load: str, args: tuple[str, ...], message: str
) -> None:
    shutil.copy(DATA / "sample-trace.jsonl", tmp_path / "trace.jsonl")
    out = run(
        tmp_path,
        SIM.format(sim="slots = 8")
        + f"[workload]\ntrace = {{ file = 'trace.jsonl' }}\n[load]\n{load}\n",
        *args,
        exit_code=2,
    )["output"]
    assert message in out
    assert "Traceback" not in out


def test_speedup_without_a_trace_is_refused(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        SIM.format(sim="slots = 8")
        + "[prompts]\nitems = ['hi']\n[load]\nconcurrency = [1]\nrequests = 1\n",
        "--speedup",
        "2",
        exit_code=2,
    )["output"]
    assert "--speedup: expected a scenario with a [workload] trace" in out


def test_a_bad_trace_stops_before_the_simulator_starts(tmp_path: Path) -> None:
    (tmp_path / "trace.jsonl").write_text(
        '{"timestamp_ms": 5, "input_tokens": 3, "output_tokens": 2}\n'
        '{"timestamp_ms": 1, "input_tokens": 3, "output_tokens": 2}\n'
    )
    out = run(
        tmp_path,
        SIM.format(sim="slots = 8") + "[workload]\ntrace = { file = 'trace.jsonl' }\n[load]\n",
        exit_code=2,
    )["output"]
    assert "line 2" in out
    assert "cold start" not in out


@pytest.mark.parametrize(
    "name", ["workload-lengths", "workload-trace", "workload-sessions", "workload-dataset"]
)
def test_the_shipped_workload_scenarios_load(name: str) -> None:
    from loadbench.scenario import load_scenario

    scenario = load_scenario(SCENARIOS / f"{name}.toml", env={})
    assert scenario.workload is not None
    assert scenario.target.simulate is not None
