"""report, compare, merge and thresholds end to end, on result files the simulator produced."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import jsonschema
import orjson
import pytest

from loadbench.metrics import decode
from loadbench.results.file import schema

SCENARIO = """
name = "gate"
[target.simulate]
ttft_ms = {ttft}
itl_ms = 1
slots = 8
jitter = 0.05
seed = 1
[[models]]
name = "sim-model"
[prompts]
items = ["alpha beta", "gamma delta"]
[request]
max_tokens = 6
[load]
concurrency = [1, 4]
requests = 40
seed = 1
"""


def loadbench(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadbench", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def produce(folder: Path, name: str, ttft: int, *extra: str) -> Path:
    scenario = folder / f"{name}.toml"
    scenario.write_text(SCENARIO.format(ttft=ttft), encoding="utf-8")
    out = folder / f"{name}.json"
    proc = loadbench("run", scenario, "-o", out, "-q", *extra)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("runs")
    return {
        "fast": produce(folder, "fast", 5),
        "fast2": produce(folder, "fast2", 5),
        "slow": produce(folder, "slow", 40),
    }


def doc(path: Path) -> dict[str, object]:
    loaded = orjson.loads(path.read_bytes())
    assert isinstance(loaded, dict)
    return loaded


def test_every_run_carries_a_scaling_summary(runs: dict[str, Path]) -> None:
    summary = doc(runs["fast"])["summary"]
    assert isinstance(summary, dict)
    (model,) = summary["models"]
    assert [p["label"] for p in model["points"]] == ["c=1", "c=4"]
    assert "knee_rule" in summary


def test_a_broken_threshold_exits_1_after_writing(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    scenario = tmp_path / "t.toml"
    scenario.write_text(SCENARIO.format(ttft=5), encoding="utf-8")
    proc = loadbench(
        "run",
        scenario,
        "-o",
        out,
        "-q",
        "--requests",
        "5",
        "--threshold",
        "ttft.p95<1ms",
        "--threshold",
        "error_rate<1%",
    )
    assert proc.returncode == 1
    assert "threshold broken: sim-model c=1: ttft.p95<1ms" in proc.stderr
    assert "error_rate" not in proc.stderr  # that one held
    assert out.exists()
    summary = doc(out)["summary"]
    assert isinstance(summary, dict)
    assert summary["slo"] == ["ttft.p95<1ms", "error_rate<1%"]
    assert summary["models"][0]["max_load_within_slo"] is None


def test_a_bad_threshold_exits_2_with_the_grammar(tmp_path: Path) -> None:
    scenario = tmp_path / "t.toml"
    scenario.write_text(SCENARIO.format(ttft=5), encoding="utf-8")
    proc = loadbench("run", scenario, "--threshold", "ttft.p95 < fast")
    assert proc.returncode == 2
    assert "--threshold 'ttft.p95 < fast'" in proc.stderr
    assert "METRIC" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_report_in_every_format_with_plots(runs: dict[str, Path], tmp_path: Path) -> None:
    md = tmp_path / "r.md"
    proc = loadbench("report", runs["fast"], runs["slow"], "-o", md, "--plot", tmp_path / "png")
    assert proc.returncode == 0, proc.stderr
    text = md.read_text(encoding="utf-8")
    assert "Side by side" in text
    assert "| c=4 |" in text
    pngs = sorted(p.name for p in (tmp_path / "png").glob("*.png"))
    assert "throughput.png" in pngs
    assert "latency.png" in pngs
    for png in (tmp_path / "png").glob("*.png"):
        assert png.read_bytes().startswith(b"\x89PNG")
    csv_path = tmp_path / "r.csv"
    assert loadbench("report", runs["fast"], "--format", "csv", "-o", csv_path).returncode == 0
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8"))))
    assert [r["label"] for r in rows] == ["c=1", "c=4"]
    html = tmp_path / "r.html"
    assert loadbench("report", runs["fast"], "--format", "html", "-o", html).returncode == 0
    assert "<table" in html.read_text(encoding="utf-8")


def test_compare_passes_a_run_against_its_twin(runs: dict[str, Path]) -> None:
    # Twins on a shared 2-core box can differ by more than their sampling noise when other
    # work competes for the CPU; the tolerance absorbs that, the 8x slower run still fails.
    proc = loadbench("compare", runs["fast"], runs["fast2"], "--max-regression", "100%")
    assert proc.returncode == 0, proc.stdout
    assert "0 regression(s)" in proc.stdout


def test_compare_fails_a_slower_candidate(runs: dict[str, Path]) -> None:
    proc = loadbench("compare", runs["fast"], runs["slow"], "--metric", "ttft.p95")
    assert proc.returncode == 1
    assert "regression" in proc.stdout
    assert loadbench("compare", runs["slow"], runs["fast"], "--metric", "ttft.p95").returncode == 0


def test_compare_names_stages_it_cannot_match(runs: dict[str, Path], tmp_path: Path) -> None:
    scenario = tmp_path / "other.toml"
    scenario.write_text(SCENARIO.format(ttft=5), encoding="utf-8")
    other = tmp_path / "other.json"
    assert (
        loadbench(
            "run", scenario, "-o", other, "-q", "--concurrency", "2", "--requests", "5"
        ).returncode
        == 0
    )
    proc = loadbench("compare", runs["fast"], other)
    assert "not matched: sim-model c=1 is only in the baseline" in proc.stdout
    assert "not matched: sim-model c=2 is only in the candidate" in proc.stdout


def test_merge_adds_histograms_exactly(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged.json"
    proc = loadbench("merge", runs["fast"], runs["fast2"], "-o", out)
    assert proc.returncode == 0, proc.stderr
    merged, a, b = doc(out), doc(runs["fast"]), doc(runs["fast2"])
    jsonschema.validate(merged, schema())
    for sm, sa, sb in zip(merged["stages"], a["stages"], b["stages"], strict=True):  # type: ignore[call-overload]
        assert sm["requests"]["sent"] == sa["requests"]["sent"] + sb["requests"]["sent"]
        for name, blob in sm["histograms"].items():
            whole = decode(sa["histograms"][name])
            whole.add(decode(sb["histograms"][name]))
            got = decode(blob)
            assert got.get_total_count() == whole.get_total_count()
            assert list(got.counts) == list(whole.counts)
    assert loadbench("report", out, "-o", tmp_path / "m.md").returncode == 0


def test_merge_refuses_different_scenarios(runs: dict[str, Path], tmp_path: Path) -> None:
    other = doc(runs["fast"])
    other["scenario"]["name"] = "another"  # type: ignore[index]
    path = tmp_path / "another.json"
    path.write_bytes(orjson.dumps(other))
    proc = loadbench("merge", runs["fast"], path, "-o", tmp_path / "x.json")
    assert proc.returncode == 2
    assert "another" in proc.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (b"\x00\xff\xfe garbage", "not JSON"),
        (b'{"schema_version": 99, "stages": []}', "schema_version 99"),
        (b'{"schema_version": 1, "stages": [', "not JSON"),
    ],
)
@pytest.mark.parametrize("command", ["report", "compare", "merge"])
def test_bad_result_files_exit_2_naming_the_file(
    tmp_path: Path, runs: dict[str, Path], content: bytes, expected: str, command: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    args = {
        "report": [bad],
        "compare": [runs["fast"], bad],
        "merge": [runs["fast"], bad, "-o", tmp_path / "m.json"],
    }[command]
    proc = loadbench(command, *args)
    assert proc.returncode == 2
    assert f"{bad}: " in proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_directory_or_missing_file_exits_2(tmp_path: Path) -> None:
    assert "is a directory" in loadbench("report", tmp_path).stderr
    proc = loadbench("report", tmp_path / "missing.json")
    assert proc.returncode == 2
    assert "missing.json: cannot read" in proc.stderr
