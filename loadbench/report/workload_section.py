"""The report's workload tables for one model: what each stage asked for beside what the
server measured, and for sessions each turn's TTFT.

Reads each stage's ``lengths`` block (written for stages with a ``[workload]``); a document
without one gets nothing, so other reports stay as they were. The OSL mismatch share sits
in the same row as the lengths on purpose: a server that stops early writes fewer tokens
and looks faster, and the row shows both at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from loadbench.report.blocks import Block, Heading, Para, Table
from loadbench.report.cells import NONE, ms, stage_label

__all__ = ["workload_blocks"]

# OSL mismatch share from which the report calls it out in words, not only in the table.
NOTABLE_MISMATCH = 0.05


def _tokens(value: object) -> str:
    return NONE if not isinstance(value, int | float) else f"{value:,.1f}"


def _share(value: object) -> str:
    return NONE if not isinstance(value, int | float) else f"{value:.0%}"


def workload_blocks(doc: Mapping[str, Any], model: str) -> Iterator[Block]:
    stages = [s for s in doc["stages"] if s["model"] == model and s.get("lengths")]
    if not stages:
        return
    first = stages[0]["lengths"]
    yield Heading(3, "Workload: requested and measured lengths")
    how = "approximate (the counts are estimates)" if first.get("approximate") else "exact"
    yield Para(
        f"Mean tokens per ok measured request. Prompts sized by {first.get('tokenizer')}: "
        f"{how}. Input asked: what the workload drew (none for a dataset's own prompts); "
        "sent: the first turn's prompt by that tokenizer; measured: the server's usage "
        "(a session's later turns carry their history). OSL mismatch: answers shorter than "
        "their max_tokens."
    )
    rows = []
    for s in stages:
        ln = s["lengths"]
        i, o = ln.get("input_tokens", {}), ln.get("output_tokens", {})
        rows.append(
            (
                stage_label(s),
                str(ln.get("ok", 0)),
                _tokens(i.get("requested_mean")),
                _tokens(i.get("counted_mean")),
                _tokens(i.get("measured_mean")),
                _tokens(o.get("requested_mean")),
                _tokens(o.get("measured_mean")),
                _share(ln.get("osl_mismatch")),
            )
        )
    header = (
        "stage",
        "ok",
        "in asked",
        "in sent",
        "in measured",
        "out asked",
        "out got",
        "OSL short",
    )
    yield Table(header, tuple(rows), (False, *(True for _ in header[1:])))
    short = [s for s in stages if (s["lengths"].get("osl_mismatch") or 0) >= NOTABLE_MISMATCH]
    if short:
        worst = max(short, key=lambda s: s["lengths"]["osl_mismatch"])
        yield Para(
            f"{len(short)} of {len(stages)} stages had {NOTABLE_MISMATCH:.0%} or more of their "
            f"answers stop short of max_tokens (up to {_share(worst['lengths']['osl_mismatch'])} "
            f"at {stage_label(worst)}): their tokens/s and E2E describe shorter answers than "
            "asked. Set ignore_eos = true in [workload] where the server honours it."
        )
    yield from _turns(stages)


def _turns(stages: list[Mapping[str, Any]]) -> Iterator[Block]:
    with_turns = [s for s in stages if s["lengths"].get("turns")]
    if not with_turns:
        return
    yield Heading(3, "Sessions: per turn")
    yield Para(
        "TTFT in ms from when each turn was sent, prompt tokens (history included) and the "
        "tokens the server said it served from its prefix cache, per turn number. A later "
        "turn as fast as the first despite a longer prompt is the prefix cache at work."
    )
    rows = []
    for s in with_turns:
        for t in s["lengths"]["turns"]:
            ttft = t.get("ttft_ms", {})
            rows.append(
                (
                    stage_label(s),
                    str(t["turn"]),
                    str(t["ok"]),
                    ms(ttft.get("p50")),
                    ms(ttft.get("p95")),
                    _tokens(t.get("prompt_tokens_mean")),
                    _tokens(t.get("cached_tokens_mean")),
                )
            )
    header = ("stage", "turn", "ok", "TTFT p50", "TTFT p95", "prompt tokens", "cached tokens")
    yield Table(header, tuple(rows), (False, *(True for _ in header[1:])))
