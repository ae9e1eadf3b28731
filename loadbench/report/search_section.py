"""The report's "Search" block for one model: the highest load that met every ``[slo]``
limit, the bracket it was found in, and every stage the search ran with its verdict.

Reads ``summary.search`` (see :mod:`loadbench.results.search`); a result without a search
adds nothing, so other reports stay as they were.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from loadbench.report.blocks import Block, Heading, Para, Terms


def _load(value: float | None, over: str) -> str:
    if value is None:
        return "—"
    return f"{value:g}/s" if over == "rate" else f"c={value:g}"


def search_blocks(doc: Mapping[str, Any], model: str) -> Iterator[Block]:
    """A heading, the answer in one sentence, then the bracket, range and stages."""
    found = [b for b in (doc.get("summary") or {}).get("search") or () if b.get("model") == model]
    if not found:
        return
    b = found[0]
    over = str(b["over"])
    lo, hi = b["bracket"]
    yield Heading(3, "Search")
    if b["answer"] is None:
        yield Para(f"No {over} tried met every SLO limit: {b['reason']}.", warning=True)
    else:
        answer = _load(b["answer"], over)
        yield Para(f"Highest {over} meeting every SLO limit: {answer}; {b['reason']}.")
    bracket = (
        f"{_load(lo, over)} met every limit, {_load(hi, over)} did not"
        if lo is not None and hi is not None
        else f"{_load(lo, over)} met every limit; nothing above it was tried"
        if lo is not None
        else f"{_load(hi, over)} did not meet every limit"
    )
    probes = ", ".join(
        f"{_load(p['value'], over)} {'✓' if p['meets'] else '✗'}" for p in b["probes"]
    )
    yield Terms(
        (
            ("Bracket", bracket),
            (
                "Searched",
                f"{_load(b['low'], over)} to {_load(b['high'], over)}, "
                f"precision {b['precision']:g}",
            ),
            (f"Stages, in order ({len(b['probes'])})", probes or "none"),
        )
    )
