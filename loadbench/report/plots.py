"""PNG plots of result documents: throughput and latency against load, latency spectra.

matplotlib is an optional extra (``loadbench[plot]``), imported inside the functions that
draw, so the rest of loadbench imports without it. Figures are built with matplotlib's
object API on an Agg canvas, never through ``pyplot``: no display, no global figure
registry to leak, no backend switched for the host process. Styles apply through
``rc_context`` for the same reason.

:func:`plot_images` is pure (documents in, PNG bytes out, for :func:`loadbench.report.document.html`
to embed); :func:`plot_files` writes them to a folder.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadbench.errors import UsageError
from loadbench.metrics import decode
from loadbench.report.cells import Run, latency, model_summary, models_of, stage_load
from loadbench.report.models_section import tradeoff_plot
from loadbench.report.resources import resource_images

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import LineStyleType, RcKeyType


MISSING = "plots need matplotlib: pip install 'loadbench[plot]'"

# Okabe-Ito: distinguishable with the common colour-vision deficiencies and in greyscale.
_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
_PERCENTILE_STYLES: tuple[tuple[str, LineStyleType], ...] = (
    ("p50", "-"),
    ("p95", "--"),
    ("p99", ":"),
)
# With one series, colour tells the percentiles apart too (blue, orange, vermillion).
_PERCENTILE_COLORS = ("#0072B2", "#E69F00", "#D55E00")
_X_LABEL = {"concurrency": "concurrency", "rate": "arrival rate (req/s)"}
_LOOP = {"concurrency": "closed loop", "rate": "open loop"}
_STYLE: dict[RcKeyType, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 10,
    "axes.labelcolor": "#333333",
    "axes.edgecolor": "#999999",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.8,
    "xtick.color": "#555555",
    "ytick.color": "#555555",
    "legend.frameon": False,
    "legend.fontsize": 9,
    "lines.linewidth": 1.8,
    "lines.markersize": 5,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.dpi": 150,
}
_SPECTRUM_POINTS = 64  # samples per line between 0 % and the last resolvable percentile


@dataclass(frozen=True)
class _Series:
    """One (run, model): its stages in load order and what the summary says about them."""

    name: str  # legend text
    mode: str
    loads: tuple[float, ...]
    stages: tuple[Mapping[str, Any], ...]
    knee_load: float | None
    harness_bound: frozenset[str]  # stage labels


def _series(runs: Sequence[Run]) -> list[_Series]:
    pairs = [(run, model) for run, doc in runs for model in models_of(doc)]
    several_runs = len(runs) > 1
    out = []
    for run, doc in runs:
        for model in models_of(doc):
            summary = model_summary(doc, model)
            stages = sorted((s for s in doc["stages"] if s["model"] == model), key=stage_load)
            knee = (summary or {}).get("knee")
            bound = frozenset(
                str(p["label"])
                for p in (summary or {}).get("points", [])
                if (p.get("littles_law") or {}).get("harness_bound")
            )
            name = f"{run} · {model}" if several_runs or len(pairs) == 1 else model
            out.append(
                _Series(
                    name=name,
                    mode=str(stages[0]["mode"]),
                    loads=tuple(stage_load(s) for s in stages),
                    stages=tuple(stages),
                    knee_load=float(knee["load"]) if knee else None,
                    harness_bound=bound,
                )
            )
    return out


def _latency(stage: Mapping[str, Any], metric: str, stat: str) -> float:
    """ms, or NaN (a gap in the line) when no request of the stage succeeded."""
    found = stage["latency_ms"].get(metric) or {}
    return float(found[stat]) if found.get("count") else math.nan


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


# --- matplotlib, at the boundary ---------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise UsageError(MISSING) from exc
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _style() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise UsageError(MISSING) from exc
    return matplotlib.rc_context(_STYLE)


def _load_axis(ax: Axes, loads: Sequence[float], mode: str) -> None:
    """Log base 2 when the loads span 8x or more (sweeps usually double), ticks at the loads."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    values = sorted(set(loads))
    if values and values[0] > 0 and values[-1] / values[0] >= 8:
        ax.set_xscale("log", base=2)
    if len(values) <= 12:
        ax.xaxis.set_major_locator(FixedLocator(values))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.set_xlabel(_X_LABEL.get(mode, mode))


def _latency_axis(ax: Axes, values: Sequence[float]) -> None:
    """Log scale when the values span more than two decades, else linear from 0."""
    from matplotlib.ticker import FuncFormatter

    finite = [v for v in values if v > 0 and math.isfinite(v)]
    if finite and max(finite) / min(finite) > 100:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    else:
        ax.set_ylim(bottom=0)
    ax.set_ylabel("latency (ms)")


def _mark_knee(ax: Axes, series: _Series, color: str, ys: Sequence[float] | None) -> None:
    """A dotted vertical line at the knee; on the throughput panel a ring and a label too."""
    if series.knee_load is None:
        return
    ax.axvline(series.knee_load, color=color, linestyle=":", linewidth=1.2, alpha=0.8)
    if ys is None or series.knee_load not in series.loads:
        return
    y = ys[series.loads.index(series.knee_load)]
    ax.plot(
        [series.knee_load],
        [y],
        "o",
        markersize=13,
        markerfacecolor="none",
        color=color,
        mew=1.5,
        clip_on=False,
    )
    ax.annotate(
        "knee",
        (series.knee_load, y),
        xytext=(9, -16),
        textcoords="offset points",
        ha="left",
        color=color,
        fontsize=9,
        fontweight="bold",
    )


def _by_mode(series: Sequence[_Series]) -> dict[str, list[_Series]]:
    modes: dict[str, list[_Series]] = {}
    for s in series:
        modes.setdefault(s.mode, []).append(s)
    return modes


def _mode_suffix(mode: str, modes: Mapping[str, object]) -> str:
    return f" · {_LOOP.get(mode, mode)}" if len(modes) > 1 else ""


def _color(series: Sequence[_Series], s: _Series) -> str:
    return _COLORS[series.index(s) % len(_COLORS)]


# --- the figures --------------------------------------------------------------------------


def _throughput_figure(series: Sequence[_Series]) -> Figure:
    modes = _by_mode(series)
    fig = _new_figure(6.5 * len(modes), 6.2)
    axes = fig.subplots(2, len(modes), sharex="col", squeeze=False)
    for col, (mode, group) in enumerate(modes.items()):
        tok_ax, req_ax = axes[0][col], axes[1][col]
        bound: list[tuple[float, float, float]] = []  # load, tok/s, req/s
        for s in group:
            color = _color(series, s)
            tok = [float(st["throughput"]["output_tokens_per_s"]) for st in s.stages]
            req = [float(st["throughput"]["requests_per_s"]) for st in s.stages]
            tok_ax.plot(s.loads, tok, "o-", color=color, label=s.name)
            req_ax.plot(s.loads, req, "o-", color=color, label=s.name)
            _mark_knee(tok_ax, s, color, tok)
            _mark_knee(req_ax, s, color, None)
            bound += [
                (s.loads[i], tok[i], req[i])
                for i, st in enumerate(s.stages)
                if st["label"] in s.harness_bound
            ]
        if bound:  # drawn last: on top of every line, last in the legend
            xs = [b[0] for b in bound]
            marker: dict[str, Any] = {"color": "#c00000", "markersize": 8, "zorder": 5}
            tok_ax.plot(xs, [b[1] for b in bound], "X", label="client-bound stage", **marker)
            req_ax.plot(xs, [b[2] for b in bound], "X", **marker)
        if mode == "rate":  # open loop: what was asked for, so a shortfall is visible
            offered = sorted({x for s in group for x in s.loads})
            req_ax.plot(offered, offered, "--", color="#888888", linewidth=1.2, label="offered")
            req_ax.legend(loc="upper left")
        tok_ax.set_ylabel("output tokens/s")
        req_ax.set_ylabel("requests/s")
        tok_ax.set_title("Output throughput" + _mode_suffix(mode, modes))
        req_ax.set_title("Completed requests")
        for ax in (tok_ax, req_ax):
            ax.margins(y=0.12)  # room above the peak for the knee's ring
            ax.set_ylim(bottom=0)
            _load_axis(ax, [x for s in group for x in s.loads], mode)
        tok_ax.set_xlabel("")
        tok_ax.legend(loc="lower right")
    return fig


def _latency_figure(series: Sequence[_Series]) -> Figure:
    from matplotlib.lines import Line2D

    modes = _by_mode(series)
    fig = _new_figure(6.5 * len(modes), 6.8)
    axes = fig.subplots(2, len(modes), sharex="col", squeeze=False)
    panels = (("ttft", "Time to first token (TTFT)"), ("itl", "Inter-token latency (ITL)"))
    for col, (mode, group) in enumerate(modes.items()):
        for row, (metric, title) in enumerate(panels):
            ax = axes[row][col]
            values: list[float] = []
            for s in group:
                color = _color(series, s)
                for (stat, style), own in zip(_PERCENTILE_STYLES, _PERCENTILE_COLORS, strict=True):
                    ys = [_latency(st, metric, stat) for st in s.stages]
                    values += ys
                    line_color = own if len(series) == 1 else color
                    ax.plot(
                        s.loads, ys, marker="o", linestyle=style, color=line_color, markersize=4
                    )
                _mark_knee(ax, s, "#777777" if len(series) == 1 else color, None)
            ax.set_title(title + _mode_suffix(mode, modes))
            _latency_axis(ax, values)
            _load_axis(ax, [x for s in group for x in s.loads], mode)
        axes[0][col].set_xlabel("")
        single = len(series) == 1
        handles = [
            Line2D([], [], color=own if single else "#444444", linestyle=style, label=stat)
            for (stat, style), own in zip(_PERCENTILE_STYLES, _PERCENTILE_COLORS, strict=True)
        ]
        if not single:
            handles += [Line2D([], [], color=_color(series, s), label=s.name) for s in group]
        if any(s.knee_load is not None for s in group):
            handles.append(Line2D([], [], color="#777777", linestyle=":", label="knee"))
        axes[0][col].legend(handles=handles, loc="upper left")
    if len(series) == 1:
        fig.suptitle(series[0].name, x=0.01, ha="left", fontsize=10, color="#555555")
    return fig


def _percentiles_ms(h: Any, percentiles: Sequence[float]) -> list[float]:
    """``metrics.percentile_ms`` for many percentiles in one pass over the counters.

    ``percentile_ms`` walks the counters from the start on every call: 65 points a
    line made a six-stage spectrum take over a second. ``get_percentile_to_value_dict``
    has the same semantics (bucket tops; the bottom for 0) in one walk.
    """
    found: dict[float, int] = h.get_percentile_to_value_dict(list(percentiles))
    return [round(found[p] / 1000, 3) for p in percentiles]


def _spectrum_x(count: int) -> list[float]:
    """x = 1 / (1 - q) from q = 0 up to 1 - 1/count, the last percentile count resolves."""
    end = max(count, 2)
    return [end ** (i / (_SPECTRUM_POINTS - 1)) for i in range(_SPECTRUM_POINTS)]


def _spectrum_figure(title: str, stages: Sequence[Mapping[str, Any]]) -> Figure:
    """HdrHistogram-plotter style: latency at each percentile, the tail stretched to the right.

    A line ends at the highest percentile its sample count resolves (95.8 % for 24
    requests) and then rises to the stage's maximum, so a short stage cannot pass for
    one that measured its 99.9th percentile.
    """
    from matplotlib import colormaps
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig = _new_figure(11, 4.6)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    cmap = colormaps["viridis"]
    most = 1
    for ax, (metric, name) in zip(
        axes, (("ttft", "Time to first token (TTFT)"), ("e2e", "End to end (E2E)")), strict=True
    ):
        values: list[float] = []
        for i, stage in enumerate(stages):
            blob = (stage.get("histograms") or {}).get(metric)
            if not blob:
                continue
            h = decode(blob)
            count = int(h.total_count)
            if not count:
                continue
            most = max(most, count)
            xs = _spectrum_x(count)
            ys = _percentiles_ms(h, [100.0 * (1.0 - 1.0 / x) for x in xs] + [100.0])
            xs.append(xs[-1])
            values += ys
            color = cmap(0.9 * i / max(len(stages) - 1, 1))
            ax.plot(xs, ys, color=color, label=f"{stage['label']} (n={count})", linewidth=1.6)
        ax.set_xscale("log")
        ax.set_title(name)
        _latency_axis(ax, values)
        ax.set_xlabel("percentile")
    decades = max(2, math.ceil(math.log10(most)))
    ticks = [1.0, 2.0] + [10.0**k for k in range(1, decades + 1)]
    for ax in axes:
        ax.set_xlim(1, 10.0**decades)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: _percentile_label(x)))
    axes[1].legend(
        title="stage", loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, title_fontsize=8
    )
    fig.suptitle(f"Latency by percentile · {title}", x=0.01, ha="left", fontsize=11)
    fig.supxlabel(  # a footnote; supxlabel because constrained layout makes room for it
        "Each line ends at the highest percentile its sample count n resolves, "
        "then rises to the stage's maximum.",
        x=0.01,
        ha="left",
        fontsize=8,
        color="#666666",
    )
    return fig


def _percentile_label(x: float) -> str:
    q = 100.0 * (1.0 - 1.0 / x)
    return f"{q:.{max(0, round(math.log10(x)) - 2)}f}%"


def _figures(runs: Sequence[Run]) -> Iterator[tuple[str, Figure]]:
    series = [s for s in _series(runs) if s.stages]
    if not series:
        return
    yield "throughput.png", _throughput_figure(series)
    yield "latency.png", _latency_figure(series)
    for run, doc in runs:
        for model in models_of(doc):
            stages = sorted((s for s in doc["stages"] if s["model"] == model), key=stage_load)
            if not any(latency(s, m, "max") is not None for s in stages for m in ("ttft", "e2e")):
                continue  # no ok request (a model failed in its warm-up): nothing to draw
            name = f"spectrum-{_slug(run)}-{_slug(model)}.png"
            yield name, _spectrum_figure(f"{run} · {model}", stages)


def plot_images(runs: Sequence[Run]) -> dict[str, bytes]:
    """PNG bytes by file name: ``throughput.png``, ``latency.png``, then
    ``spectrum-<run>-<model>.png`` per run and model with an ok request, then
    ``resources-<run>-<model>.png`` per run and model whose stages carry resource series,
    and ``tradeoff-<run>.png`` for a run whose models were scored. UsageError without
    matplotlib."""
    with _style():
        images = {name: _png(fig) for name, fig in _figures(runs)}
        images.update(tradeoff_plot(runs))
    images.update(resource_images(runs))
    return images


def plot_files(runs: Sequence[Run], folder: Path) -> list[Path]:
    """Write :func:`plot_images` into ``folder`` (created if needed); the paths written."""
    images = plot_images(runs)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, png in images.items():
            path = folder / name
            path.write_bytes(png)
            paths.append(path)
    except OSError as exc:
        raise UsageError(f"{folder}: cannot write plots: {exc.strerror or exc}") from exc
    return paths
