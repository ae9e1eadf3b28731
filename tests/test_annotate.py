"""``loadbench annotate``: export the sample answers, fill the scores, import them back."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from loadbench.cli import main
from loadbench.cli.annotate_command import annotate
from loadbench.models.annotate import COLUMNS
from loadbench.results import dumps, load_result
from tests.test_analysis import make_doc, make_stage

# The lead registers ``annotate`` on ``main``; until then the tests use a group of the same
# class (the one that turns LoadbenchError into ``Error: …`` and its exit code).
CLI = type(main)(name="loadbench", commands=[annotate])


def _sample(prompt_id: str, answer: str) -> dict[str, Any]:
    return {
        "prompt_id": prompt_id,
        "prompt": f"prompt {prompt_id}",
        "answer": answer,
        "truncated": False,
        "ttft_ms": 10.0,
        "e2e_ms": 50.0,
        "output_tokens": 4,
        "error": None,
    }


def _model(name: str, quality: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "served_as": f"{name}:1",
        "status": "ok",
        "reason": None,
        "meta": {
            "size_mb": None,
            "license": None,
            "capabilities": [],
            "parameters": None,
            "context": None,
            "sources": {},
        },
        "samples": [_sample("p1", "TTFT is, well,\nthe first token."), _sample("p2", "p95, 95%")],
        "quality": quality,
        "cost": None,
    }


@pytest.fixture
def result(tmp_path: Path) -> Path:
    heuristic = {
        "method": "heuristic",
        "score": 3.0,
        "scores": [
            {"prompt_id": "p1", "method": "heuristic", "score": 3.0, "verdict": None, "note": "x"},
            {"prompt_id": "p2", "method": "heuristic", "score": None, "verdict": None, "note": "y"},
        ],
    }
    doc = make_doc([make_stage("alpha"), make_stage("beta")])
    doc["scenario"]["prompt_ids"] = ["p1", "p2"]
    doc["scenario"]["prompt_aspects"] = [["first token", "latency"], []]
    doc["models"] = [_model("alpha", heuristic), _model("beta")]
    path = tmp_path / "run.json"
    path.write_bytes(dumps(doc))
    return path


def _run(*args: str) -> Result:
    return CliRunner().invoke(CLI, list(args), catch_exceptions=False)


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def _write(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = COLUMNS) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_export_writes_a_row_per_model_and_prompt_with_empty_scores(
    result: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.csv"
    done = _run("annotate", "export", str(result), "-o", str(out))
    assert done.exit_code == 0, done.output
    assert f"scores: {out} (4 rows" in done.output
    rows = _rows(out)
    assert tuple(rows[0]) == COLUMNS
    assert [(r["model"], r["prompt_id"]) for r in rows] == [
        ("alpha", "p1"),
        ("alpha", "p2"),
        ("beta", "p1"),
        ("beta", "p2"),
    ]
    assert rows[0]["answer"] == "TTFT is, well,\nthe first token."  # quoted, intact
    assert rows[0]["aspects"] == "first token; latency"
    assert {r["score"] for r in rows} == {""}


def test_round_trip_export_fill_import(result: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    _run("annotate", "export", str(result), "-o", str(out))
    rows = _rows(out)
    rows[0]["score"], rows[0]["note"] = "5", "spot on"  # alpha p1: replaces the heuristic
    rows[2]["score"] = "2"  # beta p1
    rows[3]["score"] = "4.5"  # beta p2
    _write(out, rows)
    merged_path = tmp_path / "merged.json"
    done = _run("annotate", "import", str(result), str(out), "-o", str(merged_path))
    assert done.exit_code == 0, done.output
    merged = load_result(merged_path)  # still a valid result file
    alpha, beta = merged["models"]
    assert alpha["quality"]["method"] == "manual"  # p2's heuristic entry has no score
    assert alpha["quality"]["score"] == 5
    assert alpha["quality"]["scores"][0] == {
        "prompt_id": "p1",
        "method": "manual",
        "score": 5,
        "verdict": None,
        "note": "spot on",
    }
    assert alpha["quality"]["scores"][1]["method"] == "heuristic"
    assert (beta["quality"]["method"], beta["quality"]["score"]) == ("manual", 3.25)
    # everything else is the file as it was written
    before = orjson.loads(result.read_bytes())
    after = orjson.loads(merged_path.read_bytes())
    assert {k: v for k, v in after.items() if k != "models"} == {
        k: v for k, v in before.items() if k != "models"
    }
    # a second export shows the manual scores, so a person can carry on where they left off
    again = tmp_path / "again.csv"
    _run("annotate", "export", str(merged_path), "-o", str(again))
    assert [(r["score"], r["note"]) for r in _rows(again)] == [
        ("5", "spot on"),
        ("", ""),
        ("2", ""),
        ("4.5", ""),
    ]


def test_import_mixed_methods_and_in_place(result: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    _run("annotate", "export", str(result), "-o", str(out))
    rows = _rows(out)
    rows[1]["score"] = "1"  # alpha p2 by hand; alpha p1 keeps its heuristic 3.0
    _write(out, rows)
    done = _run("annotate", "import", str(result), str(out))
    assert done.exit_code == 0, done.output
    alpha = load_result(result)["models"][0]
    assert (alpha["quality"]["method"], alpha["quality"]["score"]) == ("mixed", 2.0)


def test_bad_scores_and_unknown_rows_are_all_reported(result: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    _run("annotate", "export", str(result), "-o", str(out))
    rows = _rows(out)
    rows[0]["score"] = "6"
    rows[1]["score"] = "good"
    rows.append({"model": "gamma", "prompt_id": "p1", "score": "3"})
    rows.append({"model": "alpha", "prompt_id": "p9", "score": ""})
    _write(out, rows)
    before = result.read_bytes()
    done = _run("annotate", "import", str(result), str(out))
    assert done.exit_code == 2
    errors = [line for line in done.output.splitlines() if line.startswith("Error: ")]
    assert errors == [
        f"Error: {out}:2: score: expected a number from 1 to 5 or empty, got '6'",
        f"Error: {out}:4: score: expected a number from 1 to 5 or empty, got 'good'",
        f"Error: {out}:8: model, prompt_id: no sample 'p1' of model 'gamma' in {result}",
        f"Error: {out}:9: model, prompt_id: no sample 'p9' of model 'alpha' in {result}",
    ]  # a quoted answer over two lines takes lines 2-3 (and 5-6)
    assert result.read_bytes() == before  # nothing written


def test_a_missing_column_is_named(result: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    _write(out, [{"model": "alpha", "prompt_id": "p1"}], ("model", "prompt_id", "note"))
    done = _run("annotate", "import", str(result), str(out))
    assert done.exit_code == 2
    assert f"Error: {out}:1: missing column(s) score (header has model, prompt_id, note)" in (
        done.output
    )


def test_not_a_result_file(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"hello": 1}', encoding="utf-8")
    done = _run("annotate", "export", str(bogus), "-o", str(tmp_path / "s.csv"))
    assert done.exit_code == 2
    assert f"Error: {bogus}: not a loadbench result: no schema_version" in done.output


def test_a_result_without_models_has_nothing_to_score(tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    plain.write_bytes(dumps(make_doc([make_stage()])))
    done = _run("annotate", "export", str(plain), "-o", str(tmp_path / "s.csv"))
    assert done.exit_code == 2
    assert "no models list" in done.output
    assert not (tmp_path / "s.csv").exists()
