"""A search's verdict on one stage, and the ``summary.search`` block of a result file.

Pure, like the rest of the summary: the block is rebuilt from the document alone (the
scenario's ``load.search`` and ``[slo]``, and the stages in run order), by replaying the
bisection of :mod:`loadbench.run.search` over the stages' verdicts, so a report made long
after the run says what the run's console said.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loadbench.results.file import stage_to_dict
from loadbench.run import SearchState, StageResult, replay_search
from loadbench.scenario import LoadMode, SearchSpec
from loadbench.thresholds import Threshold, evaluate, parse_threshold, stage_value

__all__ = [
    "search_block",
    "search_line",
    "search_spec_of",
    "search_summary",
    "search_thresholds",
    "stage_meets",
    "stage_verdict",
]


def stage_meets(
    stage: Mapping[str, Any], slo: Sequence[Threshold], max_error_rate: float | None
) -> bool:
    """A stage (as the result file holds it) meets a search's limits: it ran to its end,
    its errors stayed within ``max_error_rate``, and every ``slo`` check passes, judged as
    the summary judges every stage (:func:`loadbench.thresholds.evaluate`)."""
    if stage.get("stopped") or stage.get("interrupted"):
        return False
    errors = stage_value(stage, "error_rate")
    if max_error_rate is not None and (errors is None or errors > max_error_rate):
        return False
    return all(r.passed for _, results in evaluate(slo, [stage]) for r in results)


def stage_verdict(
    stage: StageResult, slo: Sequence[Threshold], max_error_rate: float | None
) -> bool:
    """:func:`stage_meets` on a stage just run, through the dict the result file will hold,
    so the run's verdict and the file's replay cannot differ."""
    return stage_meets(stage_to_dict(stage), slo, max_error_rate)


def search_spec_of(doc: Mapping[str, Any]) -> SearchSpec | None:
    """The scenario's ``[load] search`` as the result file recorded it, or None."""
    raw = ((doc.get("scenario") or {}).get("load") or {}).get("search")
    if not isinstance(raw, Mapping):
        return None
    try:
        return SearchSpec(
            over=LoadMode(raw["over"]),
            low=raw["low"],
            high=raw["high"],
            precision=raw["precision"],
        )
    except (KeyError, ValueError):
        return None


def search_thresholds(doc: Mapping[str, Any]) -> list[Threshold]:
    """The scenario's ``[slo]``, the limits a search looks for (never a command line's)."""
    sources = (doc.get("scenario") or {}).get("slo") or []
    return [parse_threshold(t) for t in sources if isinstance(t, str)]


def search_block(
    model: str, state: SearchState, last: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One model's ``summary.search`` entry; ``last``: its last stage, which says why a
    search that did not finish stopped (interrupted, ``max_duration_s``)."""
    spec = state.spec
    reason = state.reason
    if not state.done and last is not None:
        if last.get("interrupted"):
            reason = f"interrupted at {last.get('label')}: the search did not finish"
        elif last.get("stopped") == "max_duration_s":
            reason = f"the run reached max_duration_s at {last.get('label')}"
    lo, hi = state.bracket
    return {
        "model": model,
        "over": str(spec.over),
        "low": spec.low,
        "high": spec.high,
        "precision": spec.precision,
        "answer": state.answer,
        "bracket": [lo, hi],
        "probes": [{"value": p.value, "meets": p.meets} for p in state.probes],
        "finished": state.done,
        "reason": reason,
    }


def search_summary(doc: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """One block per model that has stages, in file order; None without a search."""
    spec = search_spec_of(doc)
    if spec is None:
        return None
    slo = search_thresholds(doc)
    max_error_rate = ((doc.get("scenario") or {}).get("load") or {}).get("max_error_rate")
    key = "rate" if spec.over is LoadMode.RATE else "concurrency"
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for stage in doc.get("stages", ()):
        if isinstance(stage, Mapping) and stage.get("mode") == str(spec.over):
            by_model.setdefault(str(stage.get("model", "")), []).append(stage)
    blocks = []
    for model, stages in by_model.items():
        # A stage the run cut short got no verdict: the search ended there, unfinished.
        judged = [s for s in stages if not _cut_short(s)]
        told = [
            (
                _number(s.get(key)),
                stage_meets(s, slo, max_error_rate),
                str(s.get("label")),
                str(s["stopped"]) if s.get("stopped") else None,
            )
            for s in judged
        ]
        state = replay_search(spec, told)
        blocks.append(search_block(model, state, stages[-1] if stages else None))
    return blocks


def _number(value: object) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _cut_short(stage: Mapping[str, Any]) -> bool:
    return bool(stage.get("interrupted")) or stage.get("stopped") == "max_duration_s"


def search_line(block: Mapping[str, Any]) -> str:
    """The console's line: ``m: search: highest rate meeting every SLO: 6.5/s (bracket
    6.5–7, 6 stages)``, with why where the search ended at a bound or did not finish."""
    over, answer = block["over"], block["answer"]
    unit = "/s" if over == "rate" else ""
    lo, hi = block["bracket"]
    span = f"{_n(lo)}–{_n(hi)}" if hi is not None else f"{_n(lo)} and up"
    stages = len(block["probes"])
    plural = "s" if stages != 1 else ""
    head = f"{block['model']}: search: highest {over} meeting every SLO: "
    if answer is None:
        return f"{head}none ({block['reason']}; {stages} stage{plural})"
    tail = f"bracket {span}, {stages} stage{plural}"
    if not block["finished"] or hi is None:
        tail += f"; {block['reason']}"
    return f"{head}{_n(answer)}{unit} ({tail})"


def _n(x: float | None) -> str:
    return "—" if x is None else f"{x:g}"
