"""Reports by value: Markdown tables and highlights, CSV round trips, well-formed HTML.

Result documents are built here with the real histogram code (so ``histograms`` and
``latency_ms`` agree as in a result file) and a hand-written ``summary`` of the shape
``loadbench.results.analysis.summarize_run`` produces; the plot tests reuse them.
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

from loadbench.metrics import encode, new_histogram, record, summarize
from loadbench.report import document as report

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
    assert c1["client CPU"] == "12% ⚠ late wake-ups"  # 12% CPU: lag, not a busy client
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
    code = "import sys, loadbench.report; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- the server's side ------------------------------------------------------------------

# A real llama-server run (4 slots), trimmed: per load, TTFT, server prefill and outside
# prefill (p50, p95 ms), server decode p50, then /metrics peaks: processing, deferred.
LLAMACPP_RUN = {
    1: ((214.4, 231.9), (210.9, 228.0), (3.98, 5.02), 336.6, 1.0, 0.0),
    4: ((870.4, 883.2), (658.4, 671.2), (212.6, 217.3), 1105.9, 4.0, 0.0),
    8: ((2584.6, 2897.9), (638.0, 668.7), (1940.5, 2230.3), 1323.0, 4.0, 4.0),
    16: ((2916.4, 6823.9), (451.1, 479.7), (2465.8, 6385.7), 1501.2, 4.0, 12.0),
}


def lat(p50: float, p95: float) -> dict[str, Any]:
    """A ``latency_ms`` entry of 16 requests; mean and p99 stand in as p50 and p95."""
    return {"count": 16, "min": p50, "mean": p50, "p50": p50, "p90": p95, "p95": p95}


def llamacpp_doc() -> dict[str, Any]:
    stages = []
    for c, (ttft, prefill, outside, decode, running, deferred) in LLAMACPP_RUN.items():
        stage = make_stage("smollm2", c)
        stage["latency_ms"] |= {
            "ttft": lat(*ttft) | {"p99": ttft[1]},
            "server_prefill": lat(*prefill),
            "ttft_outside_prefill": lat(*outside),
            "server_decode": lat(decode, decode * 1.3),
        }
        stage["server_metrics"] = {
            "delta": {
                "llamacpp:prompt_tokens_total": 691.0,
                "llamacpp:prompt_tokens_cached_total": 0.0,
                "llamacpp:tokens_predicted_total": 544.0,
                "llamacpp:prompt_seconds_total": 3.76,
            },
            "peak": {
                "llamacpp:requests_processing": running,
                "llamacpp:requests_deferred": deferred,
            },
            "after": {"llamacpp:requests_processing": 0.0, "llamacpp:requests_deferred": 0.0},
        }
        stages.append(stage)
    return make_doc(stages, slo=(), knee="c=4")


def section(markdown: str, title: str) -> str:
    """The text under ``### title`` up to the next heading."""
    return markdown.split(f"### {title}\n", 1)[1].split("\n#", 1)[0]


def section_rows(markdown: str, title: str) -> dict[str, dict[str, str]]:
    """The section's table as {load label: {header: cell}}."""
    lines = [line for line in section(markdown, title).splitlines() if line.startswith("|")]
    header, *rows = ([c.strip() for c in line.split("|")[1:-1]] for line in lines)
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows[1:]}


def test_per_response_timings_give_a_server_side_ttft_split() -> None:
    md = report.markdown([("llama", llamacpp_doc())])
    text = section(md, "Server-side TTFT split")
    assert "split before percentiles are taken" in text
    rows = section_rows(md, "Server-side TTFT split")
    assert list(rows) == ["c=1", "c=4", "c=8", "c=16"]
    assert rows["c=8"] == {
        "load": "c=8",
        "TTFT p50": "2584.6",
        "server prefill p50": "638.0",
        "outside prefill p50": "1940.5",
        "TTFT p95": "2897.9",
        "server prefill p95": "668.7",
        "outside prefill p95": "2230.3",
        "server decode p50": "1323.0",
        "outside share of TTFT p50": "75%",
    }
    assert rows["c=1"]["outside prefill p50"] == "3.98"
    assert rows["c=1"]["outside share of TTFT p50"] == "2%"


def test_the_split_is_read_in_one_line_computed_from_the_stages() -> None:
    md = report.markdown([("llama", llamacpp_doc())])
    assert (
        "Reading: from c=8 most of TTFT p50 (75%, 85%) is spent waiting outside prefill: "
        "requests queue for a slot; the server reports up to 12 requests waiting at once."
    ) in md
    quiet = llamacpp_doc()
    for stage in quiet["stages"]:  # the same prefill, but nothing waits outside it
        stage["latency_ms"]["ttft_outside_prefill"] = lat(4.0, 5.0)
    assert "Reading:" not in report.markdown([("llama", quiet)])


def test_server_metrics_show_the_figures_the_server_exposes() -> None:
    md = report.markdown([("llama", llamacpp_doc())])
    assert "From llama.cpp's /metrics" in section(md, "Server metrics")
    rows = section_rows(md, "Server metrics")
    assert rows["c=16"] == {
        "load": "c=16",
        "running (peak)": "4",
        "waiting (peak)": "12",
        "prompt tokens": "691",
        "cached prompt tokens": "0",
        "cache hit": "0%",
        "generated tokens": "544",
    }  # no KV-cache column: this llama.cpp build does not expose one
    assert rows["c=1"]["waiting (peak)"] == "0"


def test_a_stage_without_metrics_gets_dashes() -> None:
    doc = llamacpp_doc()
    doc["stages"][0]["server_metrics"] = None
    rows = section_rows(report.markdown([("llama", doc)]), "Server metrics")
    assert set(list(rows["c=1"].values())[1:]) == {"—"}


def test_no_server_sections_without_the_servers_figures() -> None:
    md = report.markdown([("r1", sweep_doc())])
    assert "Server-side" not in md
    assert "Server metrics" not in md
    assert "cold start" not in md


def vllm_doc() -> dict[str, Any]:
    """vLLM: no per-response timings, but phase histograms and labelled gauges."""
    m = '{model_name="m"}'
    stages = []
    for c, queue_s in ((1, 0.0), (8, 1.6)):
        stage = make_stage("m", c, ttft_ms=(1900.0, 2000.0, 2100.0))
        stage["server_metrics"] = {
            "delta": {
                f"vllm:prompt_tokens_total{m}": 1000.0,
                f"vllm:generation_tokens_total{m}": 512.0,
                f"vllm:prefix_cache_hits_total{m}": 250.0,
                f"vllm:prefix_cache_queries_total{m}": 1000.0,
                f"vllm:request_queue_time_seconds_sum{m}": queue_s * 4,
                f"vllm:request_queue_time_seconds_count{m}": 4.0,
                f"vllm:request_prefill_time_seconds_sum{m}": 0.4,
                f"vllm:request_prefill_time_seconds_count{m}": 4.0,
                f"vllm:request_decode_time_seconds_sum{m}": 4.0,
                f"vllm:request_decode_time_seconds_count{m}": 4.0,
                f"vllm:time_to_first_token_seconds_sum{m}": queue_s * 4 + 0.4,
                f"vllm:time_to_first_token_seconds_count{m}": 4.0,
            },
            "peak": {
                f"vllm:num_requests_running{m}": float(min(c, 4)),
                f"vllm:num_requests_waiting{m}": float(max(c - 4, 0)),
                f"vllm:kv_cache_usage_perc{m}": 0.125 * c,
            },
            "after": {},
        }
        stages.append(stage)
    return make_doc(stages, slo=(), knee=None)


def test_without_timings_the_split_comes_from_the_servers_histograms() -> None:
    doc = vllm_doc()
    md = report.markdown([("vllm", doc)])
    assert "### Server-side TTFT split\n" not in md
    assert "vLLM sends no per-response timings" in md
    rows = section_rows(md, "Server-side TTFT split (means from /metrics)")
    ttft_mean = doc["stages"][1]["latency_ms"]["ttft"]["mean"]
    assert rows["c=8"] == {
        "load": "c=8",
        "TTFT mean": f"{ttft_mean:.1f}",
        "server queue mean": "1600.0",
        "server prefill mean": "100.0",
        "outside server mean": f"{ttft_mean - 1700.0:.1f}",
        "server decode mean": "1000.0",
        "server requests": "4",
    }
    assert rows["c=1"]["server queue mean"] == "0.00"
    figures = section_rows(md, "Server metrics")
    assert figures["c=8"] == {
        "load": "c=8",
        "running (peak)": "4",
        "waiting (peak)": "4",
        "prompt tokens": "1000",
        "cached prompt tokens": "250",
        "cache hit": "25%",
        "generated tokens": "512",
        "KV cache (peak)": "100%",
    }


def test_html_carries_the_server_sections() -> None:
    page = report.html([("llama", llamacpp_doc()), ("vllm", vllm_doc())])
    parsed = parse(page)
    heads = [t for t, _ in parsed.seen if t == "h3"]
    text = "".join(parsed.text)
    assert [t for t, _ in parsed.seen].count("table") == 1 + 2 * 3  # runs; per run 3
    assert len(heads) == 2 * 3
    for title in ("Server-side TTFT split", "Server metrics", "means from /metrics"):
        assert title in text
    assert "Reading: from c=8 most of TTFT p50" in text


def test_csv_has_the_server_prefill_columns_last_and_empty_without() -> None:
    assert report.CSV_COLUMNS[-2:] == ("server_prefill_p50_ms", "ttft_outside_prefill_p50_ms")
    runs = [("llama", llamacpp_doc()), ("sim", sweep_doc())]
    rows = list(csv.DictReader(io.StringIO(report.csv_text(runs))))
    c8 = next(r for r in rows if r["run"] == "llama" and r["label"] == "c=8")
    assert (c8["server_prefill_p50_ms"], c8["ttft_outside_prefill_p50_ms"]) == ("638.0", "1940.5")
    assert c8["ttft_p50_ms"] == "2584.6"
    sim = [r for r in rows if r["run"] == "sim"]
    assert {r["server_prefill_p50_ms"] for r in sim} == {""}
    assert {r["ttft_outside_prefill_p50_ms"] for r in sim} == {""}


def test_the_runs_section_shows_a_cold_start() -> None:
    doc = sweep_doc()
    doc["target"]["cold_start"] = {
        "ready_s": 0.68,
        "first_token_s": 0.93,
        "first_request_ttft_s": 0.25,
        "first_request": "ok",
    }
    failed = sweep_doc()
    failed["target"]["cold_start"] = {
        "ready_s": 2.0,
        "first_token_s": None,
        "first_request_ttft_s": None,
        "first_request": "http_503",
    }
    md = report.markdown([("warm", doc), ("cold", failed), ("none", sweep_doc())])
    runs = md.split("## Runs", 1)[1].split("\n## ", 1)[0]
    assert (
        "warm: cold start: ready 0.68 s, first token 0.93 s after launch "
        "(first request's TTFT 0.25 s)."
    ) in runs
    assert (
        "cold: cold start: ready 2.00 s after launch; the first request failed (http_503)." in runs
    )
    assert "none: cold start" not in runs


def test_highlights_tell_saturation_apart_from_the_knee() -> None:
    doc = sweep_doc()
    model = doc["summary"]["models"][0]
    model["saturation"] = {"label": "c=1", "load": 1.0, "reason": "c=1 → c=4: throughput +0%"}
    md = report.markdown([("r1", doc)])
    assert "- **Throughput saturates**: c=1 → c=4: throughput +0%" in md
    assert "- **Knee**: c=8 — " in md
    model["knee"] = None
    md = report.markdown([("r1", doc)])
    assert "- **Knee**: none within the tested range: latency grows in proportion to load" in md
    model["saturation"], model["knee"] = dict(model["saturation"]), dict(model["saturation"])
    md = report.markdown([("r1", doc)])  # the same stage: one line, the knee
    assert "Throughput saturates" not in md
