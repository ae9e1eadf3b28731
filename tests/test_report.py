"""Reports by value: Markdown tables and highlights, CSV round trips, well-formed HTML.

Result documents are built here with the real histogram code (so ``histograms`` and
``latency_ms`` agree as in a result file) and a hand-written ``summary`` of the shape
``loadbench.analysis.summarize_run`` produces; the plot tests reuse them.
"""

from __future__ import annotations

import base64
import csv
import io
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from html.parser import HTMLParser
from typing import Any

import pytest

from loadbench import report
from loadbench.metrics import encode, new_histogram, record, summarize

KNEE_RULE = "the knee is the last stage before tok/s grows < 10 % while TTFT p95 grows > 50 %"


def make_stage(
    model: str,
    load: float,
    *,
    mode: str = "concurrency",
    ttft_ms: Sequence[float] = (50.0, 60.0, 70.0, 80.0),
    itl_ms: Sequence[float] = (10.0, 11.0, 12.0, 20.0),
    e2e_ms: Sequence[float] = (300.0, 320.0, 340.0, 400.0),
    requests_per_s: float = 2.5,
    output_tokens_per_s: float = 80.125,
    failed: int = 0,
    errors: Mapping[str, int] | None = None,
    bottleneck: bool = False,
    interrupted: bool = False,
) -> dict[str, Any]:
    """One stage as ``results.stage_to_dict`` writes it; ok = len(ttft_ms)."""
    label = f"rate={load:g}/s" if mode == "rate" else f"c={load:g}"
    latency: dict[str, Any] = {}
    blobs: dict[str, str] = {}
    for metric, values in (("ttft", ttft_ms), ("itl", itl_ms), ("tpot", itl_ms), ("e2e", e2e_ms)):
        h = new_histogram()
        for v in values:
            record(h, round(v * 1000))
        latency[metric] = summarize(h).to_dict()
        blobs[metric] = encode(h)
    ok = len(ttft_ms)
    warning = "event-loop lag p99 5.5 ms > 2 ms: latencies include client delay"
    return {
        "model": model,
        "label": label,
        "mode": mode,
        "concurrency": int(load) if mode == "concurrency" else None,
        "rate": float(load) if mode == "rate" else None,
        "max_concurrency": None,
        "started_at": "2026-11-25T11:00:00.000Z",
        "finished_at": "2026-11-25T11:00:10.000Z",
        "interrupted": interrupted,
        "requests": {"sent": ok + failed, "ok": ok, "failed": failed, "warmup": 2},
        "errors": dict(errors or {}),
        "error_samples": {},
        "duration_s": 8.916048,
        "throughput": {
            "requests_per_s": requests_per_s,
            "output_tokens_per_s": output_tokens_per_s,
        },
        "tokens": {"output": 768, "counted_by": "usage"},
        "latency_ms": latency,
        "histograms": blobs,
        "histogram_clamped": 0,
        "client": {
            "cpu_percent": 12.5,
            "loop_lag_ms_p50": 0.3,
            "loop_lag_ms_p99": 5.5 if bottleneck else 0.5,
            "loop_lag_ms_max": 8.0,
            "rss_mb": 44.6,
            "bottleneck": bottleneck,
            "warning": warning if bottleneck else None,
        },
        "server": None,
    }


def make_summary(
    stages: Sequence[Mapping[str, Any]],
    *,
    slo: Sequence[str] = ("ttft.p95<=500ms",),
    knee: str | None = None,
    failing: Sequence[str] = (),
    harness_bound: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A summary of ``summarize_run``'s shape: stages in ``failing`` miss the SLO."""
    bound = dict(harness_bound or {})
    models: dict[str, list[dict[str, Any]]] = {}
    for s in stages:
        load = float(s["rate"] if s["mode"] == "rate" else s["concurrency"])
        lat = s["latency_ms"]
        meets = (s["label"] not in failing) if slo else None
        models.setdefault(s["model"], []).append(
            {
                "label": s["label"],
                "load": load,
                "achieved_concurrency": load * 0.98,
                "requests_per_s": s["throughput"]["requests_per_s"],
                "output_tokens_per_s": s["throughput"]["output_tokens_per_s"],
                "goodput_rps": (s["throughput"]["requests_per_s"] if meets else 0.0)
                if slo
                else None,
                "error_rate": s["requests"]["failed"] / s["requests"]["sent"],
                "ttft_ms": {k: lat["ttft"][k] for k in ("p50", "p95", "p99")},
                "itl_ms": {k: lat["itl"][k] for k in ("p50", "p95", "p99")},
                "e2e_ms": {k: lat["e2e"][k] for k in ("p50", "p95", "p99")},
                "littles_law": {
                    "throughput_rps": s["throughput"]["requests_per_s"],
                    "mean_e2e_s": lat["e2e"]["mean"] / 1000,
                    "in_flight_expected": load * 0.98,
                    "in_flight_target": load,
                    "busy_fraction": 0.98,
                    "harness_bound": s["label"] in bound,
                    "note": bound.get(s["label"]),
                },
                "meets_slo": meets,
                "slo_failures": ["ttft.p95 612.0 ms > 500 ms"] if meets is False else [],
            }
        )
    out = []
    for model, points in models.items():
        by_label = {p["label"]: p for p in points}
        peak = max(points, key=lambda p: p["output_tokens_per_s"])
        low = min(points, key=lambda p: p["ttft_ms"]["p50"])
        ok = [p for p in points if p["meets_slo"]]
        out.append(
            {
                "model": model,
                "mode": next(str(s["mode"]) for s in stages if s["model"] == model),
                "points": points,
                "knee": {
                    "label": knee,
                    "load": by_label[knee]["load"],
                    "reason": "tok/s +3 % past it, TTFT p95 x9.3",
                }
                if knee
                else None,
                "max_load_within_slo": {"label": ok[-1]["label"], "load": ok[-1]["load"]}
                if ok
                else None,
                "peak_throughput": {
                    "label": peak["label"],
                    "load": peak["load"],
                    "output_tokens_per_s": peak["output_tokens_per_s"],
                },
                "lowest_ttft": {
                    "label": low["label"],
                    "load": low["load"],
                    "ttft_p50_ms": low["ttft_ms"]["p50"],
                },
            }
        )
    return {"knee_rule": KNEE_RULE, "slo": list(slo), "models": out}


def make_doc(
    stages: Sequence[dict[str, Any]], *, interrupted: bool = False, **summary: Any
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "loadbench_version": "0.1.0",
        "scenario": {"name": "demo", "path": "scenarios/demo.toml"},
        "target": {"base_url": "http://127.0.0.1:8000/v1", "simulated": True},
        "environment": {"host": "bench-1", "python": "3.11.7", "platform": "Linux-6.1-x86_64"},
        "started_at": "2026-11-25T11:03:02.972Z",
        "finished_at": "2026-11-25T11:03:27.186Z",
        "interrupted": interrupted,
        "warnings": [
            f"{s['model']} {s['label']}: {s['client']['warning']}"
            for s in stages
            if s["client"]["warning"]
        ],
        "stages": list(stages),
        "summary": make_summary(stages, **summary),
    }


def sweep_doc(**summary: Any) -> dict[str, Any]:
    """A closed-loop sweep c=1..16 whose TTFT climbs past c=8, the knee."""
    stages = [
        make_stage(
            "sim-model", 1, requests_per_s=2.6918, output_tokens_per_s=86.137, bottleneck=True
        ),
        make_stage("sim-model", 4, requests_per_s=8.9441, output_tokens_per_s=286.21),
        make_stage("sim-model", 8, requests_per_s=14.6834, output_tokens_per_s=469.887),
        make_stage(
            "sim-model",
            16,
            requests_per_s=14.4588,
            output_tokens_per_s=462.683,
            ttft_ms=(580.0, 600.0, 610.0, 625.0),
            e2e_ms=(900.0, 1000.0, 1100.0, 1110.0),
            failed=1,
            errors={"timeout": 1},
        ),
    ]
    summary.setdefault("knee", "c=8")
    summary.setdefault("failing", ("c=16",))
    summary.setdefault("harness_bound", {"c=1": "in flight 0.7 of 1: the client lagged"})
    return make_doc(stages, **summary)


def table_rows(markdown: str, first_cell: str) -> list[list[str]]:
    """Cells of the Markdown table rows whose first cell is ``first_cell``."""
    rows = []
    for line in markdown.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells and cells[0] == first_cell:
            rows.append(cells)
    return rows


def header_of(markdown: str, first_cell: str) -> list[str]:
    return table_rows(markdown, first_cell)[0]


def stage_rows(markdown: str) -> dict[str, dict[str, str]]:
    """The first stage table's rows by load label, each a dict of header -> cell."""
    header = header_of(markdown, "load")
    rows: dict[str, dict[str, str]] = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells and cells[0].startswith(("c=", "rate=")) and len(cells) == len(header):
            rows.setdefault(cells[0], dict(zip(header, cells, strict=True)))
    return rows


# --- Markdown ---------------------------------------------------------------------------


def test_markdown_has_one_row_per_stage_with_its_numbers() -> None:
    doc = sweep_doc()
    md = report.markdown([("r1", doc)])
    header = header_of(md, "load")
    assert header[:5] == ["load", "ok/sent", "req/s", "tok/s", "goodput req/s"]
    rows = stage_rows(md)
    assert list(rows) == ["c=1", "c=4", "c=8", "c=16"]
    c1, c16 = rows["c=1"], rows["c=16"]
    assert c1["ok/sent"] == "4/4"
    assert c1["req/s"] == "2.69"
    assert c1["tok/s"] == "86.14"
    assert c1["goodput req/s"] == "2.69"
    assert c1["TTFT p50"] == "60.0"
    assert c1["ITL mean"] == f"{doc['stages'][0]['latency_ms']['itl']['mean']:.1f}"
    assert c1["E2E p99"] == f"{doc['stages'][0]['latency_ms']['e2e']['p99']:.1f}"
    assert c1["client CPU"] == "12% ⚠ BOTTLENECK"
    assert c16["ok/sent"] == "4/5"
    assert c16["errors"] == "timeout=1"
    assert c16["goodput req/s"] == "0.00"
    assert c16["SLO"].startswith("✗ ttft.p95 612.0 ms")
    assert rows["c=4"]["SLO"] == "✓ met"


def test_markdown_numbers_are_rounded_for_reading() -> None:
    md = report.markdown([("r1", sweep_doc())])
    stage_rows = [line for line in md.splitlines() if line.startswith("| c=")]
    assert len(stage_rows) == 4
    for line in stage_rows:
        assert not re.search(r"\d\.\d{3,}", line), line


def test_latencies_under_10_ms_keep_two_decimals() -> None:
    doc = make_doc([make_stage("m", 1, itl_ms=(3.25, 3.25, 3.25))])
    assert stage_rows(report.markdown([("r", doc)]))["c=1"]["ITL p50"] == "3.25"


def test_highlights_name_the_lowest_ttft_peak_knee_and_slo_limit() -> None:
    md = report.markdown([("r1", sweep_doc())])
    assert "### Highlights" in md
    assert "- **Lowest TTFT**: c=1 (p50 " in md
    assert "- **Highest throughput**: c=8 (469.89 tok/s)" in md
    assert "- **Knee**: c=8 — tok/s +3 % past it, TTFT p95 x9.3" in md
    assert "- **Highest load within SLO**: c=8" in md
    assert "- **Harness-bound at c=1**: in flight 0.7 of 1: the client lagged" in md
    assert "- **Client warning at c=1**: event-loop lag p99 5.5 ms \\> 2 ms" in md
    assert KNEE_RULE.replace("<", "\\<").replace(">", "\\>") in md


@pytest.mark.parametrize(
    ("summary", "knee_text", "slo_text"),
    [
        ({"knee": None, "slo": ()}, "no knee within the tested range", "no SLO given"),
        ({"failing": ("c=1", "c=4", "c=8", "c=16")}, "c=8 — ", "no stage met the SLO"),
    ],
)
def test_highlights_say_when_there_is_no_knee_or_no_slo(
    summary: dict[str, Any], knee_text: str, slo_text: str
) -> None:
    md = report.markdown([("r1", sweep_doc(**summary))])
    assert f"- **Knee**: {knee_text}" in md
    assert f"- **Highest load within SLO**: {slo_text}" in md


def test_no_slo_means_no_goodput_and_no_slo_column() -> None:
    md = report.markdown([("r1", sweep_doc(slo=()))])
    assert "SLO" not in header_of(md, "load")
    assert table_rows(md, "c=4")[0][4] == "—"
    assert "SLO: none given." in md


def test_side_by_side_appears_only_with_two_runs() -> None:
    one = report.markdown([("r1", sweep_doc())])
    assert "## Side by side" not in one
    gpu = sweep_doc()
    gpu["stages"][2]["throughput"]["output_tokens_per_s"] = 939.774  # twice as fast at c=8
    two = report.markdown([("cpu", sweep_doc()), ("gpu", gpu)])
    assert "## Side by side" in two
    section = two.split("## Side by side")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert lines[0] == "| model | load | run | tok/s | TTFT p95 | ITL p95 | E2E p95 |"
    assert len(lines) == 2 + 8  # header, rule, then four loads with a row per run
    assert lines[6].startswith("| sim-model | c=8 | cpu | 469.89 | ")
    assert lines[7].startswith("|  |  | gpu | 939.77 (+100.0%) | ")


def test_side_by_side_skips_loads_only_one_run_measured() -> None:
    small = make_doc([make_stage("sim-model", 2)], knee=None)
    md = report.markdown([("a", sweep_doc()), ("b", small)])
    assert "## Side by side" not in md


def test_an_interrupted_run_is_called_out() -> None:
    stages = [make_stage("m", 1), make_stage("m", 2, interrupted=True)]
    md = report.markdown([("r1", make_doc(stages, interrupted=True, knee=None))])
    assert "r1 was interrupted" in md
    assert table_rows(md, "c=2 (interrupted)")


def test_pipes_in_cells_are_escaped_so_tables_keep_their_columns() -> None:
    doc = sweep_doc()
    doc["scenario"]["name"] = "a|b"
    doc["stages"][3]["errors"] = {"http_503|busy": 1}
    md = report.markdown([("r|1", doc)])
    for line in md.splitlines():
        if line.startswith("| load "):
            width = len(re.split(r"(?<!\\)\|", line))
        if line.startswith("| c=16 "):
            assert len(re.split(r"(?<!\\)\|", line)) == width
            assert "http_503\\|busy=1" in line
    assert "| r\\|1 | a\\|b |" in md


def test_a_document_without_summary_still_renders() -> None:
    doc = sweep_doc()
    del doc["summary"]
    md = report.markdown([("r1", doc)])
    assert len(table_rows(md, "c=8")) == 1
    assert "no analysis summary" in md


# --- CSV --------------------------------------------------------------------------------


def test_csv_has_the_documented_header_and_a_row_per_stage() -> None:
    runs = [("r1", sweep_doc()), ("r2", sweep_doc())]
    rows = list(csv.reader(io.StringIO(report.csv_text(runs))))
    assert tuple(rows[0]) == report.CSV_COLUMNS
    assert len(rows) == 1 + 8
    assert all(len(r) == len(report.CSV_COLUMNS) for r in rows)


def test_csv_numbers_round_trip() -> None:
    doc = sweep_doc()
    rows = list(csv.DictReader(io.StringIO(report.csv_text([("r1", doc)]))))
    for row, stage in zip(rows, doc["stages"], strict=True):
        assert row["run"] == "r1"
        assert row["label"] == stage["label"]
        assert int(row["load"]) == stage["concurrency"]
        assert int(row["sent"]) == stage["requests"]["sent"]
        assert float(row["duration_s"]) == stage["duration_s"]
        assert float(row["output_tokens_per_s"]) == stage["throughput"]["output_tokens_per_s"]
        for metric in ("ttft", "itl", "tpot", "e2e"):
            for stat in ("mean", "p50", "p95", "p99"):
                assert float(row[f"{metric}_{stat}_ms"]) == stage["latency_ms"][metric][stat]
    c1, c16 = rows[0], rows[3]
    assert (c1["client_bottleneck"], c16["client_bottleneck"]) == ("true", "false")
    assert c16["error_rate"] == "0.2"
    assert c16["goodput_rps"] == "0.0"
    assert c1["interrupted"] == "false"


def test_csv_leaves_unknown_values_empty() -> None:
    failed = make_stage("m", 4, mode="rate", ttft_ms=(), itl_ms=(), e2e_ms=(), failed=3)
    doc = make_doc([failed], slo=(), knee=None)
    (row,) = csv.DictReader(io.StringIO(report.csv_text([("r", doc)])))
    assert row["mode"] == "rate"
    assert float(row["load"]) == 4.0
    assert row["goodput_rps"] == ""
    assert row["ttft_p95_ms"] == ""
    assert row["error_rate"] == "1.0"


# --- HTML -------------------------------------------------------------------------------


class _Checker(HTMLParser):
    """Collects tags and checks that the table structure opens and closes in order."""

    VOID = frozenset({"meta", "img", "br", "hr", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.seen: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, tag
        assert self.stack[-1] == tag, (tag, self.stack)
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == []
    return checker


def test_html_is_well_formed_and_carries_the_tables() -> None:
    page = report.html([("r1", sweep_doc()), ("r2", sweep_doc())])
    parsed = parse(page)
    tags = [t for t, _ in parsed.seen]
    assert page.startswith("<!DOCTYPE html>")
    assert tags.count("table") == 4  # runs, two stage tables, side by side
    assert "script" not in tags
    assert "img" not in tags
    text = "".join(parsed.text)
    assert "469.89" in text
    assert "no knee" not in text
    assert "Knee" in text


def test_html_embeds_images_as_data_uris() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    page = report.html([("r1", sweep_doc())], images={"throughput.png": png})
    assert '<img src="data:image/png;base64,' in page
    imgs = [a for t, a in parse(page).seen if t == "img"]
    assert len(imgs) == 1
    src = imgs[0]["src"] or ""
    assert base64.b64decode(src.removeprefix("data:image/png;base64,")) == png
    assert imgs[0]["alt"] == "throughput"


def test_html_escapes_what_the_documents_contain() -> None:
    doc = sweep_doc()
    doc["scenario"]["name"] = "<script>alert(1)</script>"
    page = report.html([("r1", doc)])
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    parse(page)


def test_reports_and_plots_import_without_matplotlib() -> None:
    """matplotlib is an extra: importing report or plots must not load it."""
    code = "import sys, loadbench.report, loadbench.plots; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
