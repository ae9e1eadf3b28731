"""The report's model comparison: one table of every model a run tried (speed, quality,
memory, size, licence, cost), a sample answer per model, and the quality/latency trade-off.

Reads the result document's ``models`` list (issue 10); a document without one gets no
block and no figure, so older reports render byte for byte as before. Figures per model:

- latency (TTFT and E2E, mean and p95) and tok/s per request come from the model's
  lowest-load stage (c=1 in a sweep): one user's experience, comparable across models
  whatever range each one's sweep reached; the busiest stages measure the queue, not
  the model;
- tok/s per request is decode speed, ``1000 / TPOT mean`` (TPOT: time per output token
  after the first), never prompt plus completion tokens over latency;
- tok/s aggregate is the highest of the model's stages (all requests together);
- memory is the peak over its stages: the server's RSS, and GPU memory (the server's own
  where the driver says, else the whole devices');
- cost is the cheapest stage's (usually the peak-throughput one), with its label.

matplotlib is imported inside :func:`tradeoff_plot` only, as in :mod:`loadbench.report.plots`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loadbench.errors import UsageError
from loadbench.report.blocks import Block, Heading, Para, Table, Terms
from loadbench.report.cells import NONE, Run, latency, ms, rate, stage_load

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MISSING = "plots need matplotlib: pip install 'loadbench[plot]'"
SAMPLE_CHARS = 200
_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")

HEADER = (
    "model",
    "served as",
    "status",
    "TTFT mean",
    "TTFT p95",
    "E2E mean",
    "E2E p95",
    "tok/s aggregate",
    "tok/s per request",
    "quality",
    "server RSS peak MB",
    "GPU mem peak MB",
    "size MB",
    "licence",
    "capabilities",
    "cost / M output tokens",
)
_NUMERIC = tuple(
    h not in ("model", "served as", "status", "quality", "licence", "capabilities") for h in HEADER
)


# --- reading a model's figures -------------------------------------------------------------


def _models(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = doc.get("models")
    return [m for m in found if isinstance(m, Mapping)] if isinstance(found, list) else []


def _stages(doc: Mapping[str, Any], model: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    names = {str(model.get("name")), str(model.get("served_as"))}
    return [s for s in doc.get("stages", ()) if str(s.get("model")) in names]


def _lowest(stages: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return min(stages, key=stage_load) if stages else None


def _per_request_tok_s(stage: Mapping[str, Any] | None) -> float | None:
    tpot = None if stage is None else latency(stage, "tpot", "mean")
    return 1000.0 / tpot if tpot else None


def _aggregate_tok_s(stages: Sequence[Mapping[str, Any]]) -> float | None:
    values = [float(s["throughput"]["output_tokens_per_s"]) for s in stages]
    return max(values) if values else None


def _server(stage: Mapping[str, Any]) -> Mapping[str, Any]:
    server = stage.get("server")
    return server if isinstance(server, Mapping) else {}


def rss_peak_mb(stages: Sequence[Mapping[str, Any]]) -> float | None:
    values = [float(v) for s in stages if (v := _server(s).get("rss_mb_max")) is not None]
    return max(values) if values else None


def gpu_peak_mb(stages: Sequence[Mapping[str, Any]]) -> float | None:
    """The server's own GPU memory summed over devices where every device says, else the
    devices' whole use; the peak over the stages."""
    peaks = []
    for stage in stages:
        gpus = _server(stage).get("gpus") or ()
        own = [g.get("process_memory_mb") for g in gpus]
        if gpus and None not in own:
            peaks.append(sum(float(v) for v in own))
        elif gpus:
            peaks.append(sum(float(g.get("memory_used_mb") or 0.0) for g in gpus))
    return max(peaks) if peaks else None


def _memory_mb(stages: Sequence[Mapping[str, Any]]) -> float | None:
    """What the plot sizes markers by: GPU memory where measured, else the server's RSS."""
    gpu = gpu_peak_mb(stages)
    return gpu if gpu is not None else rss_peak_mb(stages)


def _status(model: Mapping[str, Any]) -> str:
    status = str(model.get("status") or "ok")
    reason = model.get("reason")
    return f"{status}: {reason}" if reason and status != "ok" else status


def _quality(model: Mapping[str, Any]) -> str:
    quality = model.get("quality")
    if not isinstance(quality, Mapping):
        return NONE
    score = quality.get("score")
    method = str(quality.get("method") or "?")
    return f"{NONE} ({method})" if score is None else f"{float(score):.2f} ({method})"


def _cost(model: Mapping[str, Any]) -> str:
    cost = model.get("cost")
    if not isinstance(cost, Mapping) or not cost.get("per_million_output_tokens"):
        return NONE
    per_million: Mapping[str, float] = cost["per_million_output_tokens"]
    label, value = min(per_million.items(), key=lambda kv: float(kv[1]))
    source = ", declared W" if cost.get("watts_source") == "declared" else ""
    return f"{float(value):.4f} {cost.get('currency', '')} ({label}{source})"


def _number(value: float | None, digits: int = 0) -> str:
    return NONE if value is None else f"{value:.{digits}f}"


def _row(doc: Mapping[str, Any], model: Mapping[str, Any]) -> tuple[str, ...]:
    stages = _stages(doc, model)
    low = _lowest(stages)
    meta = model.get("meta") or {}
    capabilities = meta.get("capabilities") or []

    def lat(metric: str, stat: str) -> str:
        return ms(None if low is None else latency(low, metric, stat))

    return (
        str(model.get("name")),
        str(model.get("served_as") or NONE),
        _status(model),
        lat("ttft", "mean"),
        lat("ttft", "p95"),
        lat("e2e", "mean"),
        lat("e2e", "p95"),
        rate(_aggregate_tok_s(stages)),
        rate(_per_request_tok_s(low)),
        _quality(model),
        _number(rss_peak_mb(stages)),
        _number(gpu_peak_mb(stages)),
        _number(meta.get("size_mb")),
        str(meta.get("license") or NONE),
        ", ".join(str(c) for c in capabilities) or NONE,
        _cost(model),
    )


def _first_answer(model: Mapping[str, Any]) -> str | None:
    for sample in model.get("samples") or ():
        answer = " ".join(str(sample.get("answer") or "").split())
        if answer and not sample.get("error"):
            cut = answer[:SAMPLE_CHARS]
            return cut + ("…" if len(answer) > SAMPLE_CHARS else "")
    return None


# --- blocks ------------------------------------------------------------------------------


def models_blocks(runs: Sequence[Run]) -> list[Block]:
    """The comparison per run with a ``models`` list; empty when no run has one."""
    return list(_blocks(runs))


def _blocks(runs: Sequence[Run]) -> Iterator[Block]:
    for name, doc in runs:
        models = _models(doc)
        if not models:
            continue
        yield Heading(2, f"{name} · model comparison")
        yield Para(
            "Latency (ms, from when each request was due) and tok/s per request are from each "
            "model's lowest-load stage; tok/s per request is decode speed, 1000 / TPOT mean. "
            "tok/s aggregate is the model's best stage, all requests together. Memory is "
            "the peak over its stages. Quality is the mean 1-5 score over the scored "
            "prompts, with how they were scored. Cost is electricity per million output "
            "tokens at the cheapest stage."
        )
        yield Table(HEADER, tuple(_row(doc, m) for m in models), _NUMERIC)
        answers = [
            (str(m.get("name")), text) for m in models if (text := _first_answer(m)) is not None
        ]
        if answers:
            yield Heading(3, "Sample answers")
            yield Terms(tuple(answers))


# --- the trade-off plot --------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _points(
    doc: Mapping[str, Any],
) -> tuple[list[tuple[str, float, float | None, float | None, float | None]], list[str]]:
    """(model, quality, TTFT p95, E2E p95, memory MB) per plottable model, and the rest with
    why they are not plotted."""
    points, left_out = [], []
    for model in _models(doc):
        name = str(model.get("name"))
        status = str(model.get("status") or "ok")
        quality = model.get("quality")
        score = quality.get("score") if isinstance(quality, Mapping) else None
        stages = _stages(doc, model)
        low = _lowest(stages)
        if status != "ok":
            left_out.append(f"{name} ({model.get('status')})")  # reasons are in the table
        elif score is None:
            left_out.append(f"{name} (no quality score)")
        elif low is None:
            left_out.append(f"{name} (no stage)")
        else:
            ttft, e2e = latency(low, "ttft", "p95"), latency(low, "e2e", "p95")
            points.append((name, float(score), ttft, e2e, _memory_mb(stages)))
    return points, left_out


def _draw(
    ax: Axes,
    points: Sequence[tuple[str, float, float | None, float | None, float | None]],
    column: int,
    label: str,
) -> None:
    largest = max((p[4] or 0.0 for p in points), default=0.0) or 1.0
    for i, point in enumerate(points):
        x = point[column]
        if x is None:
            continue
        size = 40 + 600 * (point[4] or 0.0) / largest
        color = _COLORS[i % len(_COLORS)]
        ax.scatter([x], [point[1]], s=size, color=color, alpha=0.7, edgecolors="#333333")
        ax.annotate(point[0], (x, point[1]), xytext=(6, 6), textcoords="offset points", fontsize=8)
    ax.set_xlabel(f"{label} p95 at the lowest load (ms)")
    xs = [x for p in points if isinstance(x := p[column], float)]
    ax.set_xlim(0, max(xs, default=1.0) * 1.3 or 1.0)  # from zero: distances read as ratios
    ax.set_ylim(0.5, 5.5)
    ax.set_axisbelow(True)
    ax.grid(True, color="#e6e6e6")


def tradeoff_plot(runs: Sequence[Run]) -> dict[str, bytes]:
    """``tradeoff-<run>.png`` per run with a ``models`` list and a model to plot: quality
    against TTFT p95 (left) and E2E p95 (right), marker area by the server's memory.
    Models skipped, failed or unscored are named under the plot. Empty, and matplotlib
    not imported, when no document has a ``models`` list."""
    out: dict[str, bytes] = {}
    for name, doc in runs:
        points, left_out = _points(doc)
        if not points:
            continue
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise UsageError(MISSING) from exc
        fig = Figure(figsize=(10, 4.5), layout="constrained", dpi=150)
        FigureCanvasAgg(fig)
        left, right = fig.subplots(1, 2, sharey=True)
        left.set_ylabel("quality (1-5, higher is better)")
        _draw(left, points, 2, "TTFT")
        _draw(right, points, 3, "E2E")
        fig.suptitle(f"{name}: quality against latency (marker area: server memory)")
        caption = "Not plotted: " + "; ".join(left_out) if left_out else "Every model plotted."
        fig.supxlabel(caption, fontsize=8, color="#555555")
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        out[f"tradeoff-{_slug(name)}.png"] = buf.getvalue()
    return out
