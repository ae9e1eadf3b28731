"""Several workers' parts of one stage into the one StageResult a single process would make.

Exact where it can be: histograms add bucket for bucket (one HDR configuration
everywhere), counters add. The measured window runs from the earliest due time to the
latest end over every worker's measured requests, on the workers' wall clocks (one clock
on one machine; across machines, as close as their clocks agree), so throughputs are
totals over one window, as ``results/merge.py`` sums them for generators that ran side by
side. The client's health is the busiest worker's: a bottleneck anywhere is one for all.
"""

from __future__ import annotations

from collections.abc import Sequence

from hdrh.histogram import HdrHistogram

from loadbench.metrics import StageFigures, merge, summarize
from loadbench.observe import ClientHealth
from loadbench.run import PromptFigures, StagePlan, StageResult, prompt_figures
from loadbench.workers.wire import ShardResult

__all__ = ["merge_client", "merge_shards"]


def merge_client(healths: Sequence[ClientHealth]) -> ClientHealth:
    """The busiest worker's figures, with the worst lag and any worker's bottleneck."""
    busiest = max(healths, key=lambda h: h.cpu_percent)
    warning = busiest.warning or next((h.warning for h in healths if h.warning), None)
    return ClientHealth(
        cpu_percent=busiest.cpu_percent,
        loop_lag_ms_p50=max(h.loop_lag_ms_p50 for h in healths),
        loop_lag_ms_p99=max(h.loop_lag_ms_p99 for h in healths),
        loop_lag_ms_max=max(h.loop_lag_ms_max for h in healths),
        rss_mb=busiest.rss_mb,
        bottleneck=any(h.bottleneck for h in healths),
        warning=warning,
    )


def _histograms(parts: Sequence[ShardResult]) -> dict[str, HdrHistogram]:
    names: dict[str, None] = {}
    for p in parts:
        names.update(dict.fromkeys(p.result.figures.histograms))
    return {
        name: merge(h for p in parts if (h := p.result.figures.histograms.get(name)) is not None)
        for name in names
    }


def _counted_by(parts: Sequence[ShardResult]) -> str:
    kinds = {p.result.figures.counted_by for p in parts if p.result.figures.ok}
    if not kinds:
        return "events"
    return kinds.pop() if len(kinds) == 1 else "mixed"


def merge_shards(plan: StagePlan, parts: Sequence[ShardResult], *, stopped: bool) -> StageResult:
    """One stage from the parts that came back; ``stopped``: cut short by a stop (Ctrl-C)."""
    if not parts:
        raise ValueError("no worker returned a part of this stage")
    figs = [p.result.figures for p in parts]
    firsts = [p.first_due_wall_ns for p in parts if p.first_due_wall_ns is not None]
    lasts = [p.last_end_wall_ns for p in parts if p.last_end_wall_ns is not None]
    duration_s = (max(lasts) - min(firsts)) / 1e9 if firsts and lasts else 0.0
    ok = sum(f.ok for f in figs)
    tokens = sum(f.output_tokens for f in figs)
    errors: dict[str, int] = {}
    for f in figs:
        for kind, n in f.errors.items():
            errors[kind] = errors.get(kind, 0) + n
    goods = [f.good for f in figs]
    good = None if any(g is None for g in goods) else sum(g or 0 for g in goods)
    histograms = _histograms(parts)

    def per_s(n: int | float) -> float:
        return n / duration_s if duration_s > 0 else 0.0

    figures = StageFigures(
        sent=sum(f.sent for f in figs),
        ok=ok,
        failed=sum(f.failed for f in figs),
        errors=dict(sorted(errors.items())),
        warmup=sum(f.warmup for f in figs),
        duration_s=duration_s,
        requests_per_s=per_s(ok),
        output_tokens_per_s=per_s(tokens),
        output_tokens=tokens,
        counted_by=_counted_by(parts),
        latency_ms={name: summarize(h) for name, h in histograms.items()},
        histograms=histograms,
        clamped=sum(f.clamped for f in figs),
        achieved_concurrency=per_s(sum(p.busy_ns for p in parts) / 1e9),
        good=good,
        goodput_rps=None if good is None else per_s(good),
        preopened=_sum_or_none([f.preopened for f in figs]),
        opened=_sum_or_none([f.opened for f in figs]),
        ttft_fresh=_merged_or_none([f.ttft_fresh for f in figs]),
        ttft_reused=_merged_or_none([f.ttft_reused for f in figs]),
        long_streams=sum(f.long_streams for f in figs),
        burst_streams=sum(f.burst_streams for f in figs),
    )
    samples: dict[str, str] = {}
    for p in reversed(parts):  # the lowest rank's sample wins
        samples.update(p.result.error_samples)
    results = [p.result for p in parts]
    stops = [r.stopped for r in results if r.stopped is not None]
    return StageResult(
        plan=plan,
        figures=figures,
        client=merge_client([r.client for r in results]),
        started_at=min(r.started_at for r in results),  # ISO 8601 in UTC sorts as text
        finished_at=max(r.finished_at for r in results),
        interrupted=stopped or any(r.interrupted for r in results),
        error_samples=dict(sorted(samples.items())),
        busy_fraction=_busy_fraction(results),
        stopped=stops[0] if stops else None,
        prompts=_prompts(parts),
    )


def _sum_or_none(values: Sequence[int | None]) -> int | None:
    """A sum, when every part reported one (the same transport everywhere: all or none)."""
    return None if any(v is None for v in values) else sum(v or 0 for v in values)


def _merged_or_none(hists: Sequence[HdrHistogram | None]) -> HdrHistogram | None:
    present = [h for h in hists if h is not None]
    return merge(present) if present and len(present) == len(hists) else None


def _prompts(parts: Sequence[ShardResult]) -> dict[int, PromptFigures] | None:
    """Per-prompt figures from every part's per-prompt histograms, merged by prompt."""
    if any(p.prompts is None for p in parts):
        return None
    return prompt_figures([p.prompts for p in parts if p.prompts is not None])


def _busy_fraction(results: Sequence[StageResult]) -> float | None:
    """Weighted by each part's concurrency (its number of engine workers)."""
    total = weight = 0.0
    for r in results:
        if r.busy_fraction is None:
            return None
        workers = float(r.plan.concurrency or 1)
        total += r.busy_fraction * workers
        weight += workers
    return round(total / weight, 4) if weight else None
