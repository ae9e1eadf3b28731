"""Per-prompt medians within a stage: which prompt of a set is slow, folded as requests end.

Apart from the engine because it is a fold of its own (two histograms per prompt seen,
nothing per request), used only when a stage has 2 to ``MAX_PROMPT_FIGURES`` prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

from loadbench.metrics import merge, new_histogram, percentile_ms, record
from loadbench.records import RequestRecord

__all__ = [
    "MAX_PROMPT_FIGURES",
    "PromptFigures",
    "PromptFold",
    "PromptHistograms",
    "prompt_figures",
    "prompt_fold",
]

# Per-prompt figures for a prompt set of 2 up to this many prompts (two histograms each,
# ~190 KB apiece); beyond it, a dataset's prompts are too many to tell apart in a table.
MAX_PROMPT_FIGURES = 100


@dataclass(frozen=True)
class PromptFigures:
    """One prompt's ok measured requests in a stage, with their medians in ms from the
    due time; ``ttft_p50_ms`` is None when none of them streamed a token."""

    count: int
    ttft_p50_ms: float | None
    e2e_p50_ms: float


# A prompt's TTFT and E2E histograms (µs), as a fold keeps them and a worker sends them.
PromptHistograms = dict[int, tuple[HdrHistogram, HdrHistogram]]


def prompt_fold(plan_order: Sequence[int], prompts: int, workload: bool) -> PromptFold | None:
    """The stage's per-prompt fold, when it gets one: 2 to MAX_PROMPT_FIGURES prompts and
    no ``[workload]`` (its items are not prompts of a set). A worker sends the fold's
    histograms (``RunState.prompt_fold``), and its driver merges them by prompt."""
    if workload or not plan_order or not 2 <= prompts <= MAX_PROMPT_FIGURES:
        return None
    return PromptFold(plan_order)


def prompt_figures(parts: Sequence[PromptHistograms]) -> dict[int, PromptFigures]:
    """Per-prompt figures from one or more folds' histograms, merged by prompt (exact:
    bucket for bucket)."""
    if len(parts) == 1:
        merged = parts[0]
    else:
        merged = {
            prompt: (
                merge(part[prompt][0] for part in parts if prompt in part),
                merge(part[prompt][1] for part in parts if prompt in part),
            )
            for prompt in {prompt for part in parts for prompt in part}
        }
    return {
        prompt: PromptFigures(
            count=e2e.total_count,
            ttft_p50_ms=percentile_ms(ttft, 50.0) if ttft.total_count else None,
            e2e_p50_ms=percentile_ms(e2e, 50.0),
        )
        for prompt, (ttft, e2e) in sorted(merged.items())
    }


class PromptFold:
    """Per-prompt TTFT and E2E histograms, folded from each ok measured request: bounded
    state (two histograms per prompt seen), nothing kept per request."""

    def __init__(self, order: Sequence[int]) -> None:
        self._order = order
        self._hs: PromptHistograms = {}

    def add(self, rec: RequestRecord) -> None:
        prompt = self._order[rec.index % len(self._order)]
        hs = self._hs.get(prompt)
        if hs is None:
            hs = self._hs[prompt] = (new_histogram(), new_histogram())
        due = min(rec.due_ns, rec.sent_ns)  # as the stage's accumulator counts it
        record(hs[1], (rec.end_ns - due + 500) // 1000)
        if rec.token_ns:
            record(hs[0], (rec.token_ns[0] - due + 500) // 1000)

    @property
    def histograms(self) -> PromptHistograms:
        return self._hs

    def finish(self) -> dict[int, PromptFigures]:
        return prompt_figures([self._hs])
