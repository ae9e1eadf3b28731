"""The report's resources: a table per model (memory, GPU, watts, joules per token per stage)
and a plot of the monitor's series over the run, stage boundaries marked.

What a person would otherwise watch by hand in Task Manager or ``nvidia-smi`` during a run.
Reads the ``server`` object of each stage (``series``, ``summary``, ``energy``, ``absent``,
written since issue 14); a document without series (older files) gets no block and no
figure, so it renders as it always did. Several GPUs are summed (memory, watts, joules) or
averaged (utilisation); RAPL zones are summed as the CPU packages (``psys``, the whole
platform, is left out when packages are present, as it contains them).

matplotlib is imported inside the drawing functions, as in :mod:`loadbench.report.plots`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from loadbench.errors import UsageError
from loadbench.report.blocks import Block, Heading, Para, Table

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

NONE = "—"
MISSING = "plots need matplotlib: pip install 'loadbench[plot]'"
_GPU = re.compile(r"gpu(\d+)_(memory_used_mb|utilization_percent|power_w|server_memory_mb)$")
_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


# --- reading a document ------------------------------------------------------------------


def _stages(doc: Mapping[str, Any], model: str) -> list[Mapping[str, Any]]:
    return [s for s in doc["stages"] if s["model"] == model]


def _server(stage: Mapping[str, Any]) -> Mapping[str, Any]:
    server = stage.get("server")
    return server if isinstance(server, Mapping) else {}


def has_series(doc: Mapping[str, Any], model: str) -> bool:
    return any("series" in _server(s) for s in _stages(doc, model))


def _stat(server: Mapping[str, Any], column: str, stat: str) -> float | None:
    found = (server.get("summary") or {}).get(column)
    return None if not found else float(found[stat])


def _gpu_sum(server: Mapping[str, Any], quantity: str, stat: str) -> float | None:
    values = [
        float(found[stat])
        for column, found in (server.get("summary") or {}).items()
        if (m := _GPU.match(column)) and m.group(2) == quantity
    ]
    if not values:
        return None
    return sum(values) / len(values) if quantity == "utilization_percent" else sum(values)


def _energy(server: Mapping[str, Any], kind: str) -> tuple[float | None, float | None]:
    """(mean watts, joules per output token) summed over the ``gpu`` or ``rapl`` meters."""
    meters = [e for e in server.get("energy") or () if str(e["meter"]).startswith(kind)]
    if kind == "rapl" and any("package" in str(e["meter"]) for e in meters):
        meters = [e for e in meters if "psys" not in str(e["meter"])]
    if not meters:
        return None, None
    watts = [e.get("watts_mean") for e in meters]
    per_token = [e.get("joules_per_output_token") for e in meters]
    return (
        sum(watts) if None not in watts else None,
        sum(per_token) if None not in per_token else None,
    )


def _cell(value: float | None, digits: int = 0) -> str:
    return NONE if value is None else f"{value:.{digits}f}"


def _load(stage: Mapping[str, Any]) -> str:
    label = str(stage["label"])
    return f"{label} (interrupted)" if stage.get("interrupted") else label


# --- blocks ------------------------------------------------------------------------------


def resources_table(doc: Mapping[str, Any], model: str) -> Table:
    header = (
        "load",
        "server CPU % mean",
        "server RSS peak MB",
        "machine free MB min",
        "GPU mem mean MB",
        "GPU mem peak MB",
        "GPU util % mean",
        "GPU W mean",
        "GPU J/token",
        "CPU pkg W mean",
        "CPU pkg J/token",
    )
    rows = []
    for stage in _stages(doc, model):
        server = _server(stage)
        gpu_w, gpu_j = _energy(server, "gpu")
        cpu_w, cpu_j = _energy(server, "rapl")
        rows.append(
            (
                _load(stage),
                _cell(_stat(server, "server_cpu_percent", "mean")),
                _cell(_stat(server, "server_rss_mb", "max")),
                _cell(_stat(server, "machine_memory_available_mb", "min")),
                _cell(_gpu_sum(server, "memory_used_mb", "mean")),
                _cell(_gpu_sum(server, "memory_used_mb", "max")),
                _cell(_gpu_sum(server, "utilization_percent", "mean")),
                _cell(gpu_w, 1),
                _cell(gpu_j, 3),
                _cell(cpu_w, 1),
                _cell(cpu_j, 3),
            )
        )
    return Table(header, tuple(rows), (False,) + (True,) * (len(header) - 1))


def _absent(doc: Mapping[str, Any], model: str) -> list[str]:
    seen: dict[str, str] = {}
    for stage in _stages(doc, model):
        for meter, why in (_server(stage).get("absent") or {}).items():
            seen.setdefault(str(meter), str(why))
    return [f"{meter}: {why}" for meter, why in seen.items()]


def resources_blocks(doc: Mapping[str, Any], model: str) -> list[Block]:
    """The model's resources section; empty for a document without series."""
    if not has_series(doc, model):
        return []
    blocks: list[Block] = [
        Heading(3, "Resources"),
        Para(
            "Sampled on this machine during each stage (warmup included). Server: the "
            "server's process and its children, CPU as % of one core. GPU figures are "
            "summed over devices (utilisation averaged). J/token: a stage's joules over its "
            "output tokens; CPU pkg: the RAPL package counters."
        ),
        resources_table(doc, model),
    ]
    absent = _absent(doc, model)
    if absent:
        blocks.append(Para("Not measured: " + "; ".join(absent) + "."))
    return blocks


# --- the plot ----------------------------------------------------------------------------


def _offsets(stages: Sequence[Mapping[str, Any]]) -> list[float]:
    """Each stage's start in seconds from the first one's, from ``started_at``; durations
    laid end to end where a time does not parse."""
    out: list[float] = []
    first: datetime | None = None
    for i, stage in enumerate(stages):
        try:
            at = datetime.fromisoformat(str(stage.get("started_at")))
            first = first or at
            out.append((at - first).total_seconds())
        except ValueError:
            previous = stages[i - 1] if i else None
            out.append(out[-1] + float(previous["duration_s"]) if previous and out else 0.0)
    return out


def _lines(
    stages: Sequence[Mapping[str, Any]], offsets: Sequence[float], keep: Callable[[str], bool]
) -> dict[str, tuple[list[float], list[float | None]]]:
    """Column name to (run time s, values) for the columns ``keep(name)`` picks, across stages;
    a None between stages breaks the line at each boundary."""
    out: dict[str, tuple[list[float], list[float | None]]] = {}
    for stage, offset in zip(stages, offsets, strict=True):
        series = _server(stage).get("series") or {}
        t_s = series.get("t_s") or []
        for name, values in series.items():
            if name == "t_s" or not keep(name):
                continue
            xs, ys = out.setdefault(name, ([], []))
            if xs:
                xs.append(xs[-1])
                ys.append(None)
            xs.extend(offset + float(t) for t in t_s)
            ys.extend(values)
    return out


def _label(name: str) -> str:
    m = _GPU.match(name)
    if m:
        what = {
            "memory_used_mb": "memory",
            "utilization_percent": "utilisation",
            "power_w": "power",
            "server_memory_mb": "server's memory",
        }[m.group(2)]
        return f"GPU {m.group(1)} {what}"
    return {
        "server_cpu_percent": "server",
        "machine_cpu_percent": "machine (mean of cores)",
        "machine_cpu_busiest_core_percent": "machine (busiest core)",
        "server_rss_mb": "server RSS",
        "machine_memory_used_mb": "machine used",
    }.get(name, name.removeprefix("rapl_").removesuffix("_power_w") + " (RAPL)")


_PANELS: tuple[tuple[str, str, Callable[[str], bool]], ...] = (
    ("CPU", "% (server: of one core)", lambda n: n.startswith(("server_cpu", "machine_cpu"))),
    (
        "Memory",
        "MB",
        lambda n: (
            n in ("server_rss_mb", "machine_memory_used_mb")
            or n.endswith(("_memory_used_mb", "_server_memory_mb"))
        ),
    ),
    ("GPU utilisation", "%", lambda n: n.endswith("_utilization_percent")),
    ("Power", "W", lambda n: n.endswith("_power_w")),
)


def resources_figure(title: str, stages: Sequence[Mapping[str, Any]]) -> Figure | None:
    """CPU, memory, GPU utilisation and power against the run's time, one panel each (a
    panel without readings is left out); None when no stage has series."""
    offsets = _offsets(stages)
    panels = []
    for name, unit, keep in _PANELS:
        lines = _lines(stages, offsets, keep)
        if any(v is not None for _, ys in lines.values() for v in ys):
            panels.append((name, unit, lines))
    if not panels:
        return None
    fig = _new_figure(10.0, 1.2 + 2.1 * len(panels))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, unit, lines) in zip(axes, panels, strict=True):
        for i, (column, (xs, ys)) in enumerate(lines.items()):
            values = [float("nan") if v is None else float(v) for v in ys]
            ax.plot(xs, values, color=_COLORS[i % len(_COLORS)], label=_label(column))
        ax.set_title(name)
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
        _boundaries(ax, stages, offsets, labelled=ax is axes[0])
    axes[-1].set_xlabel("time since the first stage began (s)")
    fig.suptitle(f"Resources over the run · {title}", x=0.01, ha="left", fontsize=11)
    return fig


def _boundaries(
    ax: Axes, stages: Sequence[Mapping[str, Any]], offsets: Sequence[float], *, labelled: bool
) -> None:
    for stage, offset in zip(stages, offsets, strict=True):
        ax.axvline(offset, color="#999999", linewidth=0.8, linestyle="--")
        if labelled:
            ax.annotate(
                str(stage["label"]),
                xy=(offset, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -2),
                textcoords="offset points",
                va="top",
                fontsize=7,
                color="#555555",
            )


def _new_figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise UsageError(MISSING) from exc
    fig = Figure(figsize=(width, height), layout="constrained", dpi=150)
    FigureCanvasAgg(fig)
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _figures(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> Iterator[tuple[str, Figure]]:
    for run, doc in runs:
        models = dict.fromkeys(str(s["model"]) for s in doc["stages"])
        for model in models:
            fig = resources_figure(f"{run} · {model}", _stages(doc, model))
            if fig is not None:
                yield f"resources-{_slug(run)}-{_slug(model)}.png", fig


def resource_images(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, bytes]:
    """PNG bytes by file name, ``resources-<run>-<model>.png`` per (run, model) with series;
    empty (and matplotlib not imported) when no document has any."""
    if not any(has_series(doc, str(s["model"])) for _, doc in runs for s in doc["stages"]):
        return {}
    out = {}
    for name, fig in _figures(runs):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        out[name] = buf.getvalue()
    return out
