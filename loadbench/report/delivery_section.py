"""The report's stream-delivery lines for one model: when a stage's TTFT was the way its
bytes arrived (one burst, or a keep-alive stall) rather than the server's.

Reads each stage's ``delivery`` block (see the result schema); a stage with no verdict, or
a document without the block (an older result, a stage split over workers), adds nothing,
so those reports stay as they were.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from loadbench.report.blocks import Block, Heading, Para, Terms
from loadbench.report.cells import stage_label


def delivery_blocks(doc: Mapping[str, Any], model: str) -> Iterator[Block]:
    """A heading, what the figures mean, and one line per verdict, named by its stage."""
    items = tuple(
        (stage_label(s), str(v["text"]))
        for s in doc["stages"]
        if s["model"] == model
        for v in (s.get("delivery") or {}).get("verdicts", ())
    )
    if not items:
        return
    yield Heading(3, "Stream delivery")
    yield Para(
        "TTFT here counts from the send; a connection's first request (it opened the "
        "connection, or first used one opened before the stage) is fresh, later ones on a "
        "kept-alive connection are reused.",
        warning=True,
    )
    yield Terms(items)
