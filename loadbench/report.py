"""Reports: result documents (each with its ``summary``) rendered as Markdown, CSV or HTML.

Pure rendering: documents in, text out; the CLI decides where the text goes. A report
takes ``runs``, pairs of (a short run name, the result document), so that two runs (with
and without a GPU, two builds, two models) can be read side by side.

The Markdown and the HTML report say the same things because both render one list of
blocks (headings, paragraphs, tables, term lists) built once by :func:`_blocks`. Numbers
are formatted for reading (latencies in ms with 1 decimal, 2 below 10 ms; rates with 2);
the CSV keeps the result file's full values for spreadsheets and scripts.
"""

from __future__ import annotations

import base64
import csv
import html as _html
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Run = tuple[str, Mapping[str, Any]]

TITLE = "loadbench report"
_METRICS = ("ttft", "itl", "tpot", "e2e")
_STATS = ("mean", "p50", "p95", "p99")
_NONE = "—"

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
)
"""One row per (run, stage). ``load`` is the concurrency or the arrival rate (req/s) per
``mode``; ``error_rate`` is failed / sent (0-1); ``goodput_rps`` is empty without an SLO;
latencies are ms from each request's due time, empty when no request succeeded; booleans
are ``true``/``false``. Names are stable: new columns are only ever appended."""


# --- the content, as data --------------------------------------------------------------


@dataclass(frozen=True)
class _Heading:
    level: int
    text: str


@dataclass(frozen=True)
class _Para:
    text: str
    warning: bool = False


@dataclass(frozen=True)
class _Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]  # right-aligned columns


@dataclass(frozen=True)
class _Terms:
    items: tuple[tuple[str, str], ...]  # (term, text)


_Block = _Heading | _Para | _Table | _Terms


def _ms(value: float | None) -> str:
    if value is None:
        return _NONE
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def _rate(value: float | None) -> str:
    return _NONE if value is None else f"{value:.2f}"


def _load(value: float) -> str:
    return f"{value:g}"


def models_of(doc: Mapping[str, Any]) -> list[str]:
    """The document's models in the order of their first stage."""
    return list(dict.fromkeys(str(s["model"]) for s in doc["stages"]))


def model_summary(doc: Mapping[str, Any], model: str) -> Mapping[str, Any] | None:
    """The model's entry in ``doc["summary"]["models"]``; None when the summary lacks it."""
    for m in (doc.get("summary") or {}).get("models", []):
        if m.get("model") == model:
            found: Mapping[str, Any] = m
            return found
    return None


def _points(doc: Mapping[str, Any], model: str) -> dict[str, Mapping[str, Any]]:
    summary = model_summary(doc, model)
    return {str(p["label"]): p for p in (summary or {}).get("points", [])}


def stage_load(stage: Mapping[str, Any]) -> float:
    """The concurrency or the arrival rate (req/s), whichever the stage's mode varies."""
    value = stage["rate"] if stage["mode"] == "rate" else stage["concurrency"]
    return float(value)


def _latency(stage: Mapping[str, Any], metric: str, stat: str) -> float | None:
    """A latency in ms, or None when the stage has no value for it (no ok request)."""
    found = stage.get("latency_ms", {}).get(metric)
    if not found or not found.get("count"):
        return None
    return float(found[stat])


def _error_rate(stage: Mapping[str, Any], point: Mapping[str, Any] | None) -> float:
    if point is not None:
        return float(point["error_rate"])
    sent = stage["requests"]["sent"]
    return stage["requests"]["failed"] / sent if sent else 0.0


def _stage_label(stage: Mapping[str, Any]) -> str:
    return f"{stage['label']} (interrupted)" if stage.get("interrupted") else str(stage["label"])


def _client_cell(stage: Mapping[str, Any]) -> str:
    client = stage.get("client") or {}
    cpu = client.get("cpu_percent")
    text = _NONE if cpu is None else f"{cpu:.0f}%"
    return f"{text} ⚠ BOTTLENECK" if client.get("bottleneck") else text


def _target(doc: Mapping[str, Any]) -> str:
    target = doc.get("target") or {}
    url = str(target.get("base_url") or _NONE)
    return f"{url} (simulated)" if target.get("simulated") else url


# --- building the blocks --------------------------------------------------------------


def _runs_section(runs: Sequence[Run]) -> Iterator[_Block]:
    yield _Heading(2, "Runs")
    rows = []
    for name, doc in runs:
        env = doc.get("environment") or {}
        rows.append(
            (
                name,
                str((doc.get("scenario") or {}).get("name", _NONE)),
                _target(doc),
                str(doc.get("started_at", _NONE)),
                str(env.get("host", _NONE)),
                str(env.get("python", _NONE)),
                str(env.get("platform", _NONE)),
            )
        )
    header = ("run", "scenario", "target", "started at", "host", "python", "platform")
    yield _Table(header, tuple(rows), (False,) * len(header))
    for name, doc in runs:
        if doc.get("interrupted"):
            yield _Para(
                f"{name} was interrupted: the stages marked (interrupted) stopped early and "
                "count only the requests that finished; stages after them never ran.",
                warning=True,
            )


def _stage_table(doc: Mapping[str, Any], model: str) -> _Table:
    points = _points(doc, model)
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
            _stage_label(stage),
            f"{req['ok']}/{req['sent']}",
            _rate(stage["throughput"]["requests_per_s"]),
            _rate(stage["throughput"]["output_tokens_per_s"]),
            _rate(point.get("goodput_rps") if point else None),
        ]
        for metric in ("ttft", "itl", "e2e"):
            row += [_ms(_latency(stage, metric, s)) for s in _STATS]
        errors = stage.get("errors") or {}
        row.append(", ".join(f"{k}={v}" for k, v in sorted(errors.items())) or _NONE)
        row.append(_client_cell(stage))
        if with_slo:
            row.append(_slo_cell(point))
        rows.append(tuple(row))
    numeric = tuple(h not in ("load", "errors", "client CPU", "SLO") for h in header)
    return _Table(tuple(header), tuple(rows), numeric)


def _slo_cell(point: Mapping[str, Any] | None) -> str:
    if point is None or point.get("meets_slo") is None:
        return _NONE
    if point["meets_slo"]:
        return "✓ met"
    return "✗ " + "; ".join(point.get("slo_failures") or ["missed"])


def _highlights(doc: Mapping[str, Any], model: str) -> _Terms:
    summary = model_summary(doc, model)
    if summary is None:
        return _Terms((("Highlights", "this result has no analysis summary for the model"),))
    items: list[tuple[str, str]] = []
    lowest = summary.get("lowest_ttft")
    if lowest:
        items.append(("Lowest TTFT", f"{lowest['label']} (p50 {_ms(lowest['ttft_p50_ms'])} ms)"))
    peak = summary.get("peak_throughput")
    if peak:
        tok_s = _rate(peak["output_tokens_per_s"])
        items.append(("Highest throughput", f"{peak['label']} ({tok_s} tok/s)"))
    knee = summary.get("knee")
    if knee is None:
        items.append(("Knee", "no knee within the tested range"))
    else:
        label, reason = str(knee["label"]), str(knee["reason"])
        items.append(("Knee", reason if reason.startswith(label) else f"{label} — {reason}"))
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
    return _Terms(tuple(items))


def _other_warnings(doc: Mapping[str, Any]) -> list[str]:
    """Run warnings that are not already a stage's client warning shown in its highlights."""
    shown = {
        f"{s['model']} {s['label']}: {s['client']['warning']}"
        for s in doc["stages"]
        if (s.get("client") or {}).get("warning")
    }
    return [str(w) for w in doc.get("warnings", []) if w not in shown]


def _model_sections(runs: Sequence[Run]) -> Iterator[_Block]:
    for name, doc in runs:
        slo = (doc.get("summary") or {}).get("slo") or []
        for model in models_of(doc):
            modes = {str(s["mode"]) for s in doc["stages"] if s["model"] == model}
            kind = "arrival-rate stages" if modes == {"rate"} else "concurrency stages"
            yield _Heading(2, f"{name} · {model}")
            slo_text = ", ".join(slo) if slo else "none given"
            yield _Para(f"{kind.capitalize()}. SLO: {slo_text}.")
            yield _stage_table(doc, model)
            yield _Heading(3, "Highlights")
            yield _highlights(doc, model)
        others = _other_warnings(doc)
        if others:
            yield _Heading(3, f"Warnings for {name}")
            yield _Terms(tuple(("warning", w) for w in others))


def _side_by_side(runs: Sequence[Run]) -> Iterator[_Block]:
    """For each (model, load) that more than one run measured, the key figures per run."""
    seen: dict[tuple[str, str, float], list[tuple[str, Mapping[str, Any]]]] = {}
    for name, doc in runs:
        for stage in doc["stages"]:
            key = (str(stage["model"]), str(stage["mode"]), stage_load(stage))
            seen.setdefault(key, []).append((name, stage))
    shared = sorted((k, v) for k, v in seen.items() if len({n for n, _ in v}) > 1)
    if not shared:
        return
    yield _Heading(2, "Side by side")
    yield _Para(
        "Each model and load measured in more than one run. Percentages are relative to "
        "the first run listed; for tok/s higher is better, for latencies (ms, p95) lower is."
    )
    header = ("model", "load", "run", "tok/s", "TTFT p95", "ITL p95", "E2E p95")
    formats = (_rate, _ms, _ms, _ms)
    rows = []
    for (model, _mode, _value), entries in shared:
        base = _key_figures(entries[0][1])
        for i, (name, stage) in enumerate(entries):
            cells = [model, _stage_label(stage)] if i == 0 else ["", ""]
            cells.append(name)
            figures = _key_figures(stage)
            for fmt, value, base_value in zip(formats, figures, base, strict=True):
                text = fmt(value)
                if i and value is not None and base_value:
                    text += f" ({(value - base_value) / base_value * 100:+.1f}%)"
                cells.append(text)
            rows.append(tuple(cells))
    yield _Table(header, tuple(rows), (False, False, False, True, True, True, True))


def _key_figures(stage: Mapping[str, Any]) -> tuple[float | None, ...]:
    """tok/s, then TTFT, ITL and E2E p95 (ms): what a side-by-side reader compares."""
    tok_s = float(stage["throughput"]["output_tokens_per_s"])
    return (tok_s, *(_latency(stage, m, "p95") for m in ("ttft", "itl", "e2e")))


def _knee_rules(runs: Sequence[Run]) -> Iterator[_Block]:
    rules = {
        str(rule): name
        for name, doc in runs
        if (rule := (doc.get("summary") or {}).get("knee_rule"))
    }
    if not rules:
        return
    yield _Heading(2, "How the knee is found")
    for rule in rules:
        yield _Para(rule)


def _blocks(runs: Sequence[Run]) -> list[_Block]:
    return [
        _Heading(1, TITLE),
        _Para(
            "Latencies are in milliseconds, measured from when each request was due; rates "
            "are per second over each stage's measured window. TTFT: time to first token; "
            "ITL: gap between tokens; E2E: whole request."
        ),
        *_runs_section(runs),
        *_model_sections(runs),
        *(_side_by_side(runs) if len(runs) > 1 else ()),
        *_knee_rules(runs),
    ]


# --- Markdown -----------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|])|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def _md(text: str) -> str:
    """Escape what GitHub would read as markup; intraword ``_`` (``http_503``) stays."""
    flat = " ".join(text.split())
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), flat)


def _md_block(block: _Block) -> str:
    if isinstance(block, _Heading):
        return "#" * block.level + " " + _md(block.text)
    if isinstance(block, _Para):
        return ("> ⚠ " if block.warning else "") + _md(block.text)
    if isinstance(block, _Terms):
        return "\n".join(f"- **{_md(term)}**: {_md(text)}" for term, text in block.items)
    lines = [
        "| " + " | ".join(_md(h) for h in block.header) + " |",
        "|" + "|".join("---:" if n else "---" for n in block.numeric) + "|",
    ]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in block.rows]
    return "\n".join(lines)


def markdown(runs: Sequence[Run]) -> str:
    """``benchmark_report.md``: runs, a table per run and model, highlights, comparisons."""
    return "\n\n".join(_md_block(b) for b in _blocks(runs)) + "\n"


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
        points = {m: _points(doc, m) for m in models_of(doc)}
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
                    row[f"{metric}_{stat}_ms"] = _latency(stage, metric, stat)
            row["client_cpu_percent"] = client.get("cpu_percent")
            row["client_bottleneck"] = bool(client.get("bottleneck"))
            row["interrupted"] = bool(stage.get("interrupted"))
            yield row


def csv_text(runs: Sequence[Run]) -> str:
    """One row per (run, stage) under the header :data:`CSV_COLUMNS`; ``\\n`` line ends."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in csv_rows(runs):
        writer.writerow([_csv_value(row[c]) for c in CSV_COLUMNS])
    return out.getvalue()


# --- HTML ---------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0;
  --head: #f6f8fa; --warn-bg: #fff8c5; --warn-line: #d4a72c; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 1400px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.8em; border-bottom: 1px solid var(--line); padding-bottom: .3em; }
h2 { font-size: 1.35em; margin-top: 2em; border-bottom: 1px solid var(--line);
  padding-bottom: .25em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
p { max-width: 90ch; }
.warning { background: var(--warn-bg); border-left: 4px solid var(--warn-line);
  padding: 8px 12px; max-width: none; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0;
  font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 8px; white-space: nowrap; }
th { background: var(--head); font-weight: 600; }
td.num, th.num { text-align: right; }
tbody tr:nth-child(even) { background: #fbfcfd; }
ul.terms { padding-left: 1.2em; }
ul.terms li { margin: 2px 0; }
figure { margin: 16px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13px; }
"""


def _e(text: str) -> str:
    return _html.escape(text, quote=True)


def _html_block(block: _Block) -> str:
    if isinstance(block, _Heading):
        return f"<h{block.level}>{_e(block.text)}</h{block.level}>"
    if isinstance(block, _Para):
        if block.warning:
            return f'<p class="warning">⚠ {_e(block.text)}</p>'
        return f"<p>{_e(block.text)}</p>"
    if isinstance(block, _Terms):
        items = "".join(
            f"<li><strong>{_e(term)}</strong>: {_e(text)}</li>" for term, text in block.items
        )
        return f'<ul class="terms">{items}</ul>'

    def cell(tag: str, text: str, numeric: bool) -> str:
        cls = ' class="num"' if numeric else ""
        return f"<{tag}{cls}>{_e(text)}</{tag}>"

    head = "".join(cell("th", h, n) for h, n in zip(block.header, block.numeric, strict=True))
    body = "\n".join(
        "<tr>"
        + "".join(cell("td", c, n) for c, n in zip(row, block.numeric, strict=True))
        + "</tr>"
        for row in block.rows
    )
    return (
        f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table></div>"
    )


def _figures(images: Mapping[str, bytes]) -> list[str]:
    parts = ["<h2>Plots</h2>"]
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        caption = _e(name.removesuffix(".png"))
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    return parts


def html(runs: Sequence[Run], images: Mapping[str, bytes] | None = None) -> str:
    """A self-contained page: inline CSS, no script, PNGs embedded as ``data:`` URIs.

    ``images`` maps a file name (its caption) to PNG bytes, e.g. from
    :func:`loadbench.plots.plot_images`; the plots follow the runs table.
    """
    blocks = _blocks(runs)
    rendered = [_html_block(b) for b in blocks]
    if images:  # after the runs section, before the first run's tables
        sections = [i for i, b in enumerate(blocks) if isinstance(b, _Heading) and b.level == 2]
        at = sections[1] if len(sections) > 1 else len(blocks)
        rendered[at:at] = _figures(images)
    body = "\n".join(rendered)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(TITLE)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
