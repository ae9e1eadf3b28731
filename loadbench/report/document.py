"""Reports: result documents (each with its ``summary``) rendered as Markdown, CSV or HTML.

Pure rendering: documents in, text out; the CLI decides where the text goes. A report
takes ``runs``, pairs of (a short run name, the result document), so that two runs (with
and without a GPU, two builds, two models) can be read side by side.

The Markdown and the HTML report say the same things because both render one list of
blocks (headings, paragraphs, tables, term lists) built once by :func:`_blocks`; how the
blocks look in each format (escaping, CSS, embedded plots) is :mod:`loadbench.report.blocks`.
Numbers are formatted for reading (latencies in ms with 1 decimal, 2 below 10 ms; rates
with 2, by :mod:`loadbench.report.cells`); the CSV keeps the result file's full values for
spreadsheets and scripts. What the server says about itself (per-response timings,
``/metrics``, cold start) is read by :mod:`loadbench.observe.serverside`; its sections are
laid out by :mod:`loadbench.report.serverside_sections`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from loadbench.observe import client_label, serverside
from loadbench.report.blocks import Block, Heading, Para, Table, Terms, to_html, to_markdown
from loadbench.report.cells import (
    NONE,
    Run,
    latency,
    model_summary,
    models_of,
    ms,
    points_by_label,
    rate,
    stage_label,
    stage_load,
)
from loadbench.report.delivery_section import delivery_blocks
from loadbench.report.models_section import models_blocks
from loadbench.report.prompts_section import prompts_blocks
from loadbench.report.resources import resources_blocks
from loadbench.report.search_section import search_blocks
from loadbench.report.serverside_sections import server_side
from loadbench.report.workload_section import workload_blocks

TITLE = "loadbench report"
_METRICS = ("ttft", "itl", "tpot", "e2e")
_STATS = ("mean", "p50", "p95", "p99")

CSV_COLUMNS: tuple[str, ...] = (
    "run",
    "model",
    "mode",
    "load",
    "label",
    "sent",
    "ok",
    "failed",
    "error_rate",
    "duration_s",
    "requests_per_s",
    "output_tokens_per_s",
    "goodput_rps",
    *(f"{m}_{s}_ms" for m in _METRICS for s in _STATS),
    "client_cpu_percent",
    "client_bottleneck",
    "interrupted",
    "server_prefill_p50_ms",
    "ttft_outside_prefill_p50_ms",
)
"""One row per (run, stage). ``load`` is the concurrency or the arrival rate (req/s) per
``mode``; ``error_rate`` is failed / sent (0-1); ``goodput_rps`` is empty without an SLO;
latencies are ms from each request's due time, empty when no request succeeded; booleans
are ``true``/``false``; the server's prefill and the rest of TTFT (ms) are empty unless the
server sent per-response timings. Names are stable: new columns are only ever appended."""


# --- reading a document ------------------------------------------------------------------


def _error_rate(stage: Mapping[str, Any], point: Mapping[str, Any] | None) -> float:
    if point is not None:
        return float(point["error_rate"])
    sent = stage["requests"]["sent"]
    return stage["requests"]["failed"] / sent if sent else 0.0


def _client_cell(stage: Mapping[str, Any]) -> str:
    client = stage.get("client") or {}
    cpu = client.get("cpu_percent")
    text = NONE if cpu is None else f"{cpu:.0f}%"
    label = client_label(cpu, bottleneck=bool(client.get("bottleneck")))
    return f"{text} ⚠ {label}" if label else text


def _target(doc: Mapping[str, Any]) -> str:
    target = doc.get("target") or {}
    url = str(target.get("base_url") or NONE)
    return f"{url} (simulated)" if target.get("simulated") else url


# --- building the blocks --------------------------------------------------------------


def _runs_section(runs: Sequence[Run]) -> Iterator[Block]:
    yield Heading(2, "Runs")
    rows = []
    for name, doc in runs:
        env = doc.get("environment") or {}
        rows.append(
            (
                name,
                str((doc.get("scenario") or {}).get("name", NONE)),
                _target(doc),
                str(doc.get("started_at", NONE)),
                str(env.get("host", NONE)),
                str(env.get("python", NONE)),
                str(env.get("platform", NONE)),
            )
        )
    header = ("run", "scenario", "target", "started at", "host", "python", "platform")
    yield Table(header, tuple(rows), (False,) * len(header))
    for name, doc in runs:
        cold = serverside.cold_start_text(doc.get("target"))
        if cold:
            yield Para(f"{name}: {cold}.")
    for name, doc in runs:
        if doc.get("interrupted"):
            yield Para(
                f"{name} was interrupted: the stages marked (interrupted) stopped early and "
                "count only the requests that finished; stages after them never ran.",
                warning=True,
            )


def _stage_table(doc: Mapping[str, Any], model: str) -> Table:
    points = points_by_label(doc, model)
    with_slo = bool((doc.get("summary") or {}).get("slo"))
    header = ["load", "ok/sent", "req/s", "tok/s", "goodput req/s"]
    for metric in ("TTFT", "ITL", "E2E"):
        header += [f"{metric} {s}" for s in _STATS]
    header += ["errors", "client CPU"]
    if with_slo:
        header.append("SLO")
    rows = []
    for stage in doc["stages"]:
        if stage["model"] != model:
            continue
        point = points.get(str(stage["label"]))
        req = stage["requests"]
        row = [
            stage_label(stage),
            f"{req['ok']}/{req['sent']}",
            rate(stage["throughput"]["requests_per_s"]),
            rate(stage["throughput"]["output_tokens_per_s"]),
            rate(point.get("goodput_rps") if point else None),
        ]
        for metric in ("ttft", "itl", "e2e"):
            row += [ms(latency(stage, metric, s)) for s in _STATS]
        errors = stage.get("errors") or {}
        row.append(", ".join(f"{k}={v}" for k, v in sorted(errors.items())) or NONE)
        row.append(_client_cell(stage))
        if with_slo:
            row.append(_slo_cell(point))
        rows.append(tuple(row))
    numeric = tuple(h not in ("load", "errors", "client CPU", "SLO") for h in header)
    return Table(tuple(header), tuple(rows), numeric)


def _slo_cell(point: Mapping[str, Any] | None) -> str:
    if point is None or point.get("meets_slo") is None:
        return NONE
    if point["meets_slo"]:
        return "✓ met"
    return "✗ " + "; ".join(point.get("slo_failures") or ["missed"])


def _named(point: Mapping[str, Any]) -> str:
    label, reason = str(point["label"]), str(point["reason"])
    return reason if reason.startswith(label) else f"{label} — {reason}"


def _highlights(doc: Mapping[str, Any], model: str) -> Terms:
    summary = model_summary(doc, model)
    if summary is None:
        return Terms((("Highlights", "this result has no analysis summary for the model"),))
    items: list[tuple[str, str]] = []
    lowest = summary.get("lowest_ttft")
    if lowest:
        items.append(("Lowest TTFT", f"{lowest['label']} (p50 {ms(lowest['ttft_p50_ms'])} ms)"))
    peak = summary.get("peak_throughput")
    if peak:
        tok_s = rate(peak["output_tokens_per_s"])
        items.append(("Highest throughput", f"{peak['label']} ({tok_s} tok/s)"))
    knee, saturation = summary.get("knee"), summary.get("saturation")
    if saturation and (knee is None or knee["label"] != saturation["label"]):
        items.append(("Throughput saturates", _named(saturation)))
    if knee is not None:
        items.append(("Knee", _named(knee)))
    elif saturation:
        items.append(("Knee", "none within the tested range: latency grows in proportion to load"))
    else:
        items.append(("Knee", "no knee within the tested range"))
    best = summary.get("max_load_within_slo")
    if not (doc.get("summary") or {}).get("slo"):
        within = "no SLO given"
    elif best:
        within = str(best["label"])
    else:
        within = "no stage met the SLO"
    items.append(("Highest load within SLO", within))
    bound = [
        (str(p["label"]), (p.get("littles_law") or {}).get("note"))
        for p in summary.get("points", [])
        if (p.get("littles_law") or {}).get("harness_bound")
    ]
    for label, note in bound:
        items.append((f"Harness-bound at {label}", str(note or "the client limited this stage")))
    if not bound:
        items.append(("Harness-bound stages", "none"))
    warned = [
        (str(s["label"]), str(s["client"]["warning"]))
        for s in doc["stages"]
        if s["model"] == model and (s.get("client") or {}).get("warning")
    ]
    for label, warning in warned:
        items.append((f"Client warning at {label}", warning))
    if not warned:
        items.append(("Client warnings", "none"))
    return Terms(tuple(items))


def _other_warnings(doc: Mapping[str, Any]) -> list[str]:
    """Run warnings that are not already a stage's client warning shown in its highlights."""
    shown = {
        f"{s['model']} {s['label']}: {s['client']['warning']}"
        for s in doc["stages"]
        if (s.get("client") or {}).get("warning")
    }
    return [str(w) for w in doc.get("warnings", []) if w not in shown]


def _model_sections(runs: Sequence[Run]) -> Iterator[Block]:
    for name, doc in runs:
        slo = (doc.get("summary") or {}).get("slo") or []
        for model in models_of(doc):
            modes = {str(s["mode"]) for s in doc["stages"] if s["model"] == model}
            kind = "arrival-rate stages" if modes == {"rate"} else "concurrency stages"
            yield Heading(2, f"{name} · {model}")
            slo_text = ", ".join(slo) if slo else "none given"
            yield Para(f"{kind.capitalize()}. SLO: {slo_text}.")
            yield _stage_table(doc, model)
            yield Heading(3, "Highlights")
            yield _highlights(doc, model)
            yield from search_blocks(doc, model)
            yield from server_side(doc, model)
            yield from resources_blocks(doc, model)
            yield from workload_blocks(doc, model)
            yield from prompts_blocks(doc, model)
            yield from delivery_blocks(doc, model)
        others = _other_warnings(doc)
        if others:
            yield Heading(3, f"Warnings for {name}")
            yield Terms(tuple(("warning", w) for w in others))


def _side_by_side(runs: Sequence[Run]) -> Iterator[Block]:
    """For each (model, load) that more than one run measured, the key figures per run."""
    seen: dict[tuple[str, str, float], list[tuple[str, Mapping[str, Any]]]] = {}
    for name, doc in runs:
        for stage in doc["stages"]:
            key = (str(stage["model"]), str(stage["mode"]), stage_load(stage))
            seen.setdefault(key, []).append((name, stage))
    shared = sorted((k, v) for k, v in seen.items() if len({n for n, _ in v}) > 1)
    if not shared:
        return
    yield Heading(2, "Side by side")
    yield Para(
        "Each model and load measured in more than one run. Percentages are relative to "
        "the first run listed; for tok/s higher is better, for latencies (ms, p95) lower is."
    )
    header = ("model", "load", "run", "tok/s", "TTFT p95", "ITL p95", "E2E p95")
    formats = (rate, ms, ms, ms)
    rows = []
    for (model, _mode, _value), entries in shared:
        base = _key_figures(entries[0][1])
        for i, (name, stage) in enumerate(entries):
            cells = [model, stage_label(stage)] if i == 0 else ["", ""]
            cells.append(name)
            figures = _key_figures(stage)
            for fmt, value, base_value in zip(formats, figures, base, strict=True):
                text = fmt(value)
                if i and value is not None and base_value:
                    text += f" ({(value - base_value) / base_value * 100:+.1f}%)"
                cells.append(text)
            rows.append(tuple(cells))
    yield Table(header, tuple(rows), (False, False, False, True, True, True, True))


def _key_figures(stage: Mapping[str, Any]) -> tuple[float | None, ...]:
    """tok/s, then TTFT, ITL and E2E p95 (ms): what a side-by-side reader compares."""
    tok_s = float(stage["throughput"]["output_tokens_per_s"])
    return (tok_s, *(latency(stage, m, "p95") for m in ("ttft", "itl", "e2e")))


def _knee_rules(runs: Sequence[Run]) -> Iterator[Block]:
    rules = {
        str(rule): name
        for name, doc in runs
        if (rule := (doc.get("summary") or {}).get("knee_rule"))
    }
    if not rules:
        return
    yield Heading(2, "How the knee is found")
    for rule in rules:
        yield Para(rule)


def _blocks(runs: Sequence[Run]) -> list[Block]:
    return [
        Heading(1, TITLE),
        Para(
            "Latencies are in milliseconds, measured from when each request was due; rates "
            "are per second over each stage's measured window. TTFT: time to first token; "
            "ITL: gap between tokens; E2E: whole request."
        ),
        *_runs_section(runs),
        *models_blocks(runs),  # the models compared, with each one's status and reason
        *_model_sections(runs),
        *(_side_by_side(runs) if len(runs) > 1 else ()),
        *_knee_rules(runs),
    ]


# --- Markdown and HTML: the blocks, rendered by report.blocks ---------------------------


def markdown(runs: Sequence[Run]) -> str:
    """``benchmark_report.md``: runs, a table per run and model, highlights, comparisons."""
    return to_markdown(_blocks(runs))


def html(runs: Sequence[Run], images: Mapping[str, bytes] | None = None) -> str:
    """A self-contained page: inline CSS, no script, PNGs embedded as ``data:`` URIs.

    ``images`` maps a file name (its caption) to PNG bytes, e.g. from
    :func:`loadbench.report.plots.plot_images`; the plots follow the runs table.
    """
    blocks = _blocks(runs)
    # after the runs section, before the first run's tables
    sections = [i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.level == 2]
    at = sections[1] if len(sections) > 1 else len(blocks)
    return to_html(blocks, TITLE, images, at)


# --- CSV ----------------------------------------------------------------------------------


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_rows(runs: Sequence[Run]) -> Iterator[dict[str, object]]:
    """The rows of :func:`csv_text` as values, keyed by :data:`CSV_COLUMNS`."""
    for name, doc in runs:
        points = {m: points_by_label(doc, m) for m in models_of(doc)}
        for stage in doc["stages"]:
            point = points[str(stage["model"])].get(str(stage["label"]))
            req = stage["requests"]
            client = stage.get("client") or {}
            load = stage["rate"] if stage["mode"] == "rate" else stage["concurrency"]
            row: dict[str, object] = {
                "run": name,
                "model": stage["model"],
                "mode": stage["mode"],
                "load": load,
                "label": stage["label"],
                "sent": req["sent"],
                "ok": req["ok"],
                "failed": req["failed"],
                "error_rate": round(_error_rate(stage, point), 6),
                "duration_s": stage["duration_s"],
                "requests_per_s": stage["throughput"]["requests_per_s"],
                "output_tokens_per_s": stage["throughput"]["output_tokens_per_s"],
                "goodput_rps": point.get("goodput_rps") if point else None,
            }
            for metric in _METRICS:
                for stat in _STATS:
                    row[f"{metric}_{stat}_ms"] = latency(stage, metric, stat)
            row["client_cpu_percent"] = client.get("cpu_percent")
            row["client_bottleneck"] = bool(client.get("bottleneck"))
            row["interrupted"] = bool(stage.get("interrupted"))
            row["server_prefill_p50_ms"] = latency(stage, "server_prefill", "p50")
            row["ttft_outside_prefill_p50_ms"] = latency(stage, "ttft_outside_prefill", "p50")
            yield row


def csv_text(runs: Sequence[Run]) -> str:
    """One row per (run, stage) under the header :data:`CSV_COLUMNS`; ``\\n`` line ends."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in csv_rows(runs):
        writer.writerow([_csv_value(row[c]) for c in CSV_COLUMNS])
    return out.getvalue()
