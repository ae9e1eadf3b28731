"""The scenario's ``[workload]`` section: read into a ``WorkloadSpec``, or every problem at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loadbench.errors import ScenarioError
from loadbench.scenario import load_scenario
from loadbench.scenario.workload_model import (
    DatasetFormat,
    DatasetSpec,
    Dist,
    LengthDist,
    SessionSpec,
    SharedPrefixSpec,
    TraceSpec,
)
from loadbench.workload import prepare_workload

DATA = Path(__file__).resolve().parent.parent / "scenarios" / "data"

BASE = """\
[target]
base_url = "http://127.0.0.1:8000/v1"
[[models]]
name = "m"
[prompts]
items = ["hello"]
[load]
concurrency = [1]
requests = 4
"""


def _load(tmp_path: Path, workload: str) -> object:
    for name in ("sample.jsonl", "sample-sharegpt.json", "sample-trace.jsonl"):
        shutil.copy(DATA / name, tmp_path / name)
    path = tmp_path / "s.toml"
    base = BASE.replace("concurrency = [1]\n", "") if "trace" in workload else BASE
    path.write_text(base + workload, encoding="utf-8")
    return load_scenario(path, env={})


def _problems(tmp_path: Path, workload: str) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        _load(tmp_path, workload)
    assert caught.value.exit_code == 2
    return [p.removeprefix(f"{tmp_path / 's.toml'}: ") for p in caught.value.message.splitlines()]


def test_no_section_no_workload(tmp_path: Path) -> None:
    assert _load(tmp_path, "").workload is None  # type: ignore[attr-defined]


def test_a_full_section_reads(tmp_path: Path) -> None:
    scenario = _load(
        tmp_path,
        """
[workload]
input_tokens = { dist = "normal", mean = 1024, stddev = 128, min = 256, max = 2048 }
output_tokens = 128
sessions = { turns = 4, think_time_s = 2.5 }
shared_prefix = { groups = 3, prefix_tokens = 500 }
tokenizer = "approx"
ignore_eos = true
seed = 42
""",
    )
    spec = scenario.workload  # type: ignore[attr-defined]
    assert spec.input_tokens == LengthDist(Dist.NORMAL, min=256, max=2048, mean=1024, stddev=128)
    assert spec.output_tokens == LengthDist.fixed(128)
    assert spec.sessions == SessionSpec(4, 2.5)
    assert spec.shared_prefix == SharedPrefixSpec(3, 500)
    assert (spec.tokenizer, spec.ignore_eos, spec.seed) == ("approx", True, 42)
    assert spec.to_dict()["input_tokens"] == {
        "dist": "normal",
        "min": 256,
        "max": 2048,
        "mean": 1024,
        "stddev": 128,
    }


def test_datasets_and_traces_read_and_prepare(tmp_path: Path) -> None:
    scenario = _load(
        tmp_path,
        """
[workload]
dataset = { file = "sample-sharegpt.json", format = "sharegpt", sample = 10, max_input_tokens = 40 }
output_tokens = { dist = "uniform", min = 16, max = 64 }
tokenizer = "approx"
""",
    )
    spec = scenario.workload  # type: ignore[attr-defined]
    assert spec.dataset == DatasetSpec(
        "sample-sharegpt.json", DatasetFormat.SHAREGPT, sample=10, max_input_tokens=40
    )
    work = prepare_workload(spec, scenario_path="s.toml", default_max_tokens=128)
    assert all(16 <= item.max_tokens <= 64 for item in work.items(30))
    trace = _load(tmp_path, '[workload]\ntrace = { file = "sample-trace.jsonl", speedup = 2 }\n')
    assert trace.workload.trace == TraceSpec("sample-trace.jsonl", 2.0)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("workload", "problems"),
    [
        (
            'input_tokens = { dist = "uniform", min = 500, max = 100 }',
            ["workload.input_tokens: expected min <= max, got min 500 and max 100"],
        ),
        (
            'input_tokens = { dist = "normal", mean = 50, stddev = -2, min = 1, max = 100 }',
            ["workload.input_tokens.stddev: expected a number >= 0, got -2"],
        ),
        (
            'input_tokens = { dist = "normal", mean = 500, stddev = 2, min = 1, max = 100 }',
            ["workload.input_tokens.mean: expected a number from min 1 to max 100, got 500"],
        ),
        (
            "input_tokens = 12.5",
            [
                "workload.input_tokens: expected a positive integer or a table "
                "with dist = fixed, uniform or normal, got 12.5"
            ],
        ),
        ("input_tokens = 0", ["workload.input_tokens: expected a positive integer, got 0"]),
        (
            'input_tokens = { dist = "uniform", min = 1.5, max = 10 }',
            ["workload.input_tokens.min: expected a positive integer, got 1.5"],
        ),
        (
            'input_tokens = { dist = "zipf" }',
            [
                "workload.input_tokens.dist: expected one of 'fixed', 'uniform', 'normal', "
                "got 'zipf'"
            ],
        ),
        (
            'input_tokens = 10\ndataset = { file = "sample.jsonl" }',
            [
                "workload: expected one of input_tokens, dataset or trace, "
                "got input_tokens and dataset"
            ],
        ),
        (
            "output_tokens = 10",
            ["workload: expected one of input_tokens, dataset or trace: where prompts come from"],
        ),
        (
            'dataset = { file = "missing.jsonl", format = "csv" }',
            [
                "workload.dataset.file: expected a file, got 'missing.jsonl' "
                "(no such file next to the scenario)",
                "workload.dataset.format: expected one of 'sharegpt', 'jsonl', 'text', got 'csv'",
            ],
        ),
        (
            'trace = { file = "sample-trace.jsonl", speedup = 0 }\nsessions = { turns = 2 }',
            [
                "workload.trace.speedup: expected a positive number up to 1e+06, got 0",
                "workload.sessions: expected no sessions with a trace: the trace has its own",
            ],
        ),
        (
            'input_tokens = 5\ntokenizer = "nope.json"',
            [
                "workload.tokenizer: expected 'auto', 'server', 'approx' or the path of a "
                "tokenizer.json, got 'nope.json' (no such file)"
            ],
        ),
        (
            "input_tokens = 5\nsessions = { turns = 0 }\nignore_eos = 1\nfoo = 2",
            [
                "workload: unknown key 'foo'",
                "workload.sessions.turns: expected a positive integer, got 0",
                "workload.ignore_eos: expected true or false, got 1",
            ],
        ),
    ],
)
def test_bad_sections_are_refused_one_line_each(
    tmp_path: Path, workload: str, problems: list[str]
) -> None:
    assert _problems(tmp_path, "[workload]\n" + workload + "\n") == problems


def test_a_tokenizer_file_that_does_not_load_stops_before_any_request(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    (tmp_path / "tok.json").write_text("{}")
    scenario = _load(tmp_path, '[workload]\ninput_tokens = 5\ntokenizer = "tok.json"\n')
    with pytest.raises(ScenarioError) as caught:
        prepare_workload(
            scenario.workload,  # type: ignore[attr-defined]
            scenario_path="s.toml",
            default_max_tokens=8,
        )
    (problem,) = caught.value.problems
    assert problem.startswith("workload.tokenizer: cannot load ")
    assert caught.value.exit_code == 2


def test_a_bad_dataset_names_its_lines(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{"prompt": 3}\n[1]\n')
    scenario = _load(tmp_path, '[workload]\ndataset = { file = "bad.jsonl", format = "jsonl" }\n')
    with pytest.raises(ScenarioError) as caught:
        prepare_workload(
            scenario.workload,  # type: ignore[attr-defined]
            scenario_path="s.toml",
            default_max_tokens=8,
        )
    assert caught.value.problems == (
        "workload.dataset.file: 'bad.jsonl' line 2: prompt: expected a non-empty string, got 3",
        "workload.dataset.file: 'bad.jsonl' line 3: expected an object with a prompt, got [1]",
    )


def test_a_workload_is_not_split_across_workers_yet(tmp_path: Path) -> None:
    """Workers would each need the items: `run` says so (exit 2) instead of ignoring it."""
    from click.testing import CliRunner

    from loadbench.cli import main

    path = tmp_path / "w.toml"
    path.write_text(
        '[target.simulate]\nttft_ms = 5\nitl_ms = 1\n[[models]]\nname = "m"\n'
        "[load]\nconcurrency = [1]\nrequests = 1\n"
        "[workload]\ninput_tokens = 64\n",
        encoding="utf-8",
    )
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(out), "--workers", "2"])
    assert result.exit_code == 2, result.output
    assert "[workload] cannot be split across --workers" in result.output
    assert not out.exists()
