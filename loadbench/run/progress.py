"""What a person sees during and after a run: a live line per stage, then a summary table.

Rendering reads the engine's state; it never feeds back into it. On a terminal the live
display redraws in place (rich); elsewhere (CI logs, pipes) it prints plain lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from loadbench.run.stage import LiveStage, RunState, StageResult

_PLAIN_EVERY_S = 5.0
_LOG_WIDTH = 200  # not a terminal: lines go to logs, where wrapping at 80 only hurts
# A skipped or failed model's reason in the summary table: the result and the report keep
# all of it (a skipped model's names every id the server lists).
REASON_CHARS = 60


def short_reason(reason: str | None, limit: int = REASON_CHARS) -> str:
    if not reason:
        return "-"
    return reason if len(reason) <= limit else reason[: limit - 1].rstrip() + "…"


def console(*, stderr: bool) -> Console:
    c = Console(stderr=stderr, highlight=False)
    if not c.is_terminal:
        c = Console(stderr=stderr, highlight=False, width=_LOG_WIDTH)
    return c


def live_line(live: LiveStage, index: int, total: int) -> str:
    acc = live.accumulator
    expected = f"/{live.expected}" if live.expected is not None else ""
    phase = (
        f"warmup {live.warmup_done}/{live.plan.warmup}  "
        if live.warmup_done < live.plan.warmup
        else ""
    )
    ttft = f"{acc.live_ttft_p50_ms():.1f} ms" if acc.ok else "-"
    errors = f"  errors {acc.failed}" if acc.failed else ""
    return (
        f"stage {index}/{total}  {live.plan.model}  {live.plan.label}  {phase}"
        f"done {acc.sent}{expected}  ttft p50 {ttft}{errors}"
    )


def stage_line(result: StageResult) -> str:
    fig = result.figures
    ttft = fig.latency_ms["ttft"]
    e2e = fig.latency_ms["e2e"]
    line = (
        f"{result.plan.model}  {result.plan.label:>10}  ok {fig.ok}/{fig.sent}  "
        f"{fig.requests_per_s:.2f} req/s  {fig.output_tokens_per_s:.1f} tok/s  "
        f"ttft p50 {ttft.p50:.1f} p95 {ttft.p95:.1f} ms  e2e p95 {e2e.p95:.1f} ms"
    )
    if fig.errors:
        line += "  errors " + ", ".join(f"{k}={v}" for k, v in sorted(fig.errors.items()))
    if result.interrupted:
        line += "  (interrupted)"
    return line


class Reporter:
    def __init__(self, console: Console, total_stages: int, *, quiet: bool = False) -> None:
        self._console = console
        self._total = total_stages
        self._quiet = quiet
        self._live: Live | None = None

    async def watch(self, state: RunState) -> None:
        """Runs until cancelled, reading the live stage a few times a second."""
        if self._quiet:
            await anyio.sleep_forever()
        if self._console.is_terminal:
            with Live(
                Text(""), console=self._console, refresh_per_second=4, transient=True
            ) as live:
                self._live = live
                try:
                    while True:
                        stage = state.live
                        if stage is not None:
                            live.update(Text(live_line(stage, len(state.stages) + 1, self._total)))
                        await anyio.sleep(0.25)
                finally:
                    self._live = None
        while True:
            await anyio.sleep(_PLAIN_EVERY_S)
            stage = state.live
            if stage is not None:
                self._console.print(live_line(stage, len(state.stages) + 1, self._total))

    def stage_done(self, result: StageResult) -> None:
        if self._quiet:
            return
        self._console.print(stage_line(result), highlight=False)
        if result.client.warning:
            self._console.print(f"  warning: {result.client.warning}", style="yellow")


def summary_table(stages: Sequence[StageResult], models: Sequence[Mapping[str, Any]] = ()) -> Table:
    """One row per stage; a model that was skipped or failed also gets a row that says
    so and why (``models``: the result document's model blocks)."""
    table = Table(title="loadbench summary (latencies in ms, from when each request was due)")
    for name, justify in [
        ("model", "left"),
        ("load", "right"),
        ("ok/sent", "right"),
        ("req/s", "right"),
        ("tok/s", "right"),
        ("TTFT p50", "right"),
        ("TTFT p95", "right"),
        ("TTFT p99", "right"),
        ("ITL p50", "right"),
        ("ITL p99", "right"),
        ("TPOT p50", "right"),
        ("E2E p95", "right"),
        ("errors", "left"),
        ("client", "left"),
        ("server", "left"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in stages:
        f = s.figures
        lat = f.latency_ms
        errors = ", ".join(f"{k}={v}" for k, v in sorted(f.errors.items())) or "-"
        client = f"{s.client.cpu_percent:.0f}% cpu"
        if s.client.label is not None:
            client += f" {s.client.label}"
        if not f.sent:  # warm-up only: the CPU of a few ms says nothing about the client
            client = "-"
        server = "-"
        if s.server is not None and s.server.samples:
            server = f"{s.server.cpu_percent_mean:.0f}% cpu {s.server.rss_mb_max:.0f} MB"
        if s.server is not None:
            server += "".join(f" gpu{g.index} {g.memory_used_mb:.0f} MB" for g in s.server.gpus)
        table.add_row(
            s.plan.model,
            s.plan.label + (" (int)" if s.interrupted else ""),
            f"{f.ok}/{f.sent}",
            f"{f.requests_per_s:.2f}",
            f"{f.output_tokens_per_s:.1f}",
            f"{lat['ttft'].p50:.1f}",
            f"{lat['ttft'].p95:.1f}",
            f"{lat['ttft'].p99:.1f}",
            f"{lat['itl'].p50:.2f}",
            f"{lat['itl'].p99:.2f}",
            f"{lat['tpot'].p50:.2f}",
            f"{lat['e2e'].p95:.1f}",
            errors,
            client,
            server,
        )
    for m in models:
        if m["status"] != "ok":
            dashes = ("-",) * 10
            table.add_row(m["name"], m["status"], *dashes, short_reason(m["reason"]), "-", "-")
    return table
