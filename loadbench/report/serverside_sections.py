"""The server's side of a model's stages in a report: its TTFT split and its /metrics.

What the server says about itself (per-response timings, ``/metrics``) is read by
:mod:`loadbench.observe.serverside`; this module lays it out as report blocks, after the
client's own tables in :mod:`loadbench.report.document`. A server that says nothing gets no
section at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from loadbench.observe import ServerFigures, serverside
from loadbench.report.blocks import Block, Heading, Para, Table
from loadbench.report.cells import NONE, latency, ms, stage_label


def _pct(value: float | None) -> str:
    return NONE if value is None else f"{value:.0%}"


def _count(value: float | None) -> str:
    return NONE if value is None else f"{value:.0f}"


def server_side(doc: Mapping[str, Any], model: str) -> Iterator[Block]:
    """The server's side of the model's stages: its TTFT split, then its /metrics."""
    stages = [s for s in doc["stages"] if s["model"] == model]
    figures = [serverside.server_figures(s.get("server_metrics")) for s in stages]
    splits = [(s, split) for s in stages if (split := serverside.ttft_split(s))]
    if splits:
        yield from _ttft_split(
            splits, dict(zip([str(s["label"]) for s in stages], figures, strict=True))
        )
    else:
        yield from _mean_split(stages)
    if any(figures):
        yield from _server_metrics(stages, figures)


def _ttft_split(
    splits: Sequence[tuple[Mapping[str, Any], serverside.TtftSplit]],
    figures: Mapping[str, ServerFigures | None],
) -> Iterator[Block]:
    yield Heading(3, "Server-side TTFT split")
    yield Para(
        "Client TTFT = the server's prefill (from its per-response timings) + the rest, "
        "outside prefill: queueing for a slot, network and harness. Each request is split "
        "before percentiles are taken, so the p50 columns need not add up exactly."
    )
    header = (
        "load",
        "TTFT p50",
        "server prefill p50",
        "outside prefill p50",
        "TTFT p95",
        "server prefill p95",
        "outside prefill p95",
        "server decode p50",
        "outside share of TTFT p50",
    )
    rows = tuple(
        (
            stage_label(stage),
            *(ms(v) for v in (sp.ttft_p50_ms, sp.prefill_p50_ms, sp.outside_p50_ms)),
            *(ms(v) for v in (sp.ttft_p95_ms, sp.prefill_p95_ms, sp.outside_p95_ms)),
            ms(sp.decode_p50_ms),
            _pct(sp.outside_share),
        )
        for stage, sp in splits
    )
    yield Table(header, rows, (False,) + (True,) * (len(header) - 1))
    waiting = {label: f.waiting_peak if f else None for label, f in figures.items()}
    reading = serverside.queue_reading([sp for _, sp in splits], waiting)
    if reading:
        yield Para(f"Reading: {reading}")


def _mean_split(stages: Sequence[Mapping[str, Any]]) -> Iterator[Block]:
    """Without per-response timings: stage means from the server's own histograms."""
    means = [(s, m) for s in stages if (m := serverside.mean_split(s.get("server_metrics")))]
    if not means:
        return
    kind = means[0][1].kind
    yield Heading(3, "Server-side TTFT split (means from /metrics)")
    yield Para(
        f"{kind} sends no per-response timings, so these are stage means from its own "
        "histograms (their change of sum / change of count over the stage, warm-up "
        "requests included, counted under server requests). Means add up where "
        "percentiles do not: outside server = client TTFT mean - the server's TTFT mean "
        "(network, HTTP front end, harness)."
    )
    notes = {m.note for _, m in means if m.note}
    yield from (Para(n) for n in sorted(notes))
    header = (
        "load",
        "TTFT mean",
        "server queue mean",
        "server prefill mean",
        "outside server mean",
        "server decode mean",
        "server requests",
    )

    def from_s(seconds: float | None) -> str:
        return ms(None if seconds is None else seconds * 1000)

    rows = tuple(
        (
            stage_label(stage),
            ms(ttft := latency(stage, "ttft", "mean")),
            from_s(m.queue_s),
            from_s(m.prefill_s),
            ms(m.outside_ms(ttft)),
            from_s(m.decode_s),
            _count(m.requests),
        )
        for stage, m in means
    )
    yield Table(header, rows, (False,) + (True,) * (len(header) - 1))


_FIGURE_COLUMNS = (
    ("running (peak)", "running_peak", _count),
    ("waiting (peak)", "waiting_peak", _count),
    ("prompt tokens", "prompt_tokens", _count),
    ("cached prompt tokens", "cached_tokens", _count),
    ("cache hit", "cache_hit_share", _pct),
    ("generated tokens", "generated_tokens", _count),
    ("KV cache (peak)", "kv_cache_peak", _pct),
)


def _server_metrics(
    stages: Sequence[Mapping[str, Any]], figures: Sequence[ServerFigures | None]
) -> Iterator[Block]:
    kind = next(f.kind for f in figures if f)
    yield Heading(3, "Server metrics")
    yield Para(
        f"From {kind}'s /metrics, read each second during the stage: peaks of gauges "
        "(requests running, waiting = queue depth, KV-cache use) and changes of counters "
        "over the stage (tokens, warm-up requests included). Columns the server does not "
        "expose are left out."
    )
    columns = [
        (title, attr, fmt)
        for title, attr, fmt in _FIGURE_COLUMNS
        if any(f and getattr(f, attr) is not None for f in figures)
    ]
    rows = tuple(
        (
            stage_label(stage),
            *(fmt(getattr(f, attr)) if f else NONE for _, attr, fmt in columns),
        )
        for stage, f in zip(stages, figures, strict=True)
    )
    header = ("load", *(title for title, _, _ in columns))
    yield Table(header, rows, (False,) + (True,) * len(columns))
