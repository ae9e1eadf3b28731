"""The report's per-prompt table for one model: which prompts of a set are slow or fast.

Reads each stage's ``prompts`` block (per-prompt TTFT and E2E p50 and count, with outliers
flagged by the rule the result states); a document whose stages have none (one prompt, an
older result, a stage split over workers) gets no block, so those reports stay as they were.
One row per prompt, one column per stage, so a sweep of six stages over a hundred prompts
is still a table one reads down: a prompt that is an outlier at every load is the prompt,
not the queue.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from loadbench.report.blocks import Block, Heading, Para, Table
from loadbench.report.cells import NONE, ms, stage_label

MARK = "*"


def _cell(figures: Mapping[str, Any] | None) -> str:
    """``TTFT / E2E`` p50 in ms, each marked when it is an outlier."""
    if figures is None:
        return NONE
    far = set(figures.get("outlier", ()))
    ttft = ms(figures.get("ttft_p50_ms")) + (MARK if "ttft" in far else "")
    e2e = ms(figures.get("e2e_p50_ms")) + (MARK if "e2e" in far else "")
    return f"{ttft} / {e2e}"


def prompts_blocks(doc: Mapping[str, Any], model: str) -> Iterator[Block]:
    """A heading, the rule, and the table; or a note when the prompts were too many."""
    stages = [s for s in doc["stages"] if s["model"] == model and s.get("prompts")]
    if not stages:
        return
    tabled = [s for s in stages if s["prompts"].get("by_id")]
    notes = dict.fromkeys(s["prompts"]["note"] for s in stages if s["prompts"].get("note"))
    ids = list(dict.fromkeys(k for s in tabled for k in s["prompts"]["by_id"]))
    if len(ids) < 2 and not notes:
        return
    yield Heading(3, "Per prompt")
    for note in notes:
        yield Para(f"{note}.")
    if len(ids) < 2:
        return
    rule = str(tabled[0]["prompts"].get("outlier_rule", ""))
    yield Para(
        f"TTFT / E2E p50 in ms, from when each request was due, per stage; "
        f"n: ok requests over all stages. {MARK} marks an outlier: {rule}."
    )
    rows = []
    for pid in ids:
        per_stage = [s["prompts"]["by_id"].get(pid) for s in tabled]
        count = sum(int(f["count"]) for f in per_stage if f is not None)
        rows.append((pid, str(count), *(_cell(f) for f in per_stage)))
    header = ("prompt", "n", *(stage_label(s) for s in tabled))
    yield Table(header, tuple(rows), (False, True, *(True for _ in tabled)))
