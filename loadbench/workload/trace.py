"""A request trace in the Mooncake layout, read and checked, and its replay schedule.

One JSON object a line: ``timestamp_ms``, ``input_tokens``, ``output_tokens``, and optional
``session_id`` and ``hash_ids`` (block hashes: two requests with the same leading hashes
share that prefix). Lines must be in time order: a replay sends them in file order, and a
shuffled trace would silently replay something else.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from loadbench.errors import show
from loadbench.scenario import MAX_TOKENS

__all__ = ["TraceEntry", "parse_trace", "schedule"]

MAX_LISTED = 20
_REQUIRED = ("timestamp_ms", "input_tokens", "output_tokens")


@dataclass(frozen=True)
class TraceEntry:
    timestamp_ms: float
    input_tokens: int
    output_tokens: int
    line: int
    session_id: str | None = None
    hash_ids: tuple[int, ...] = ()


def parse_trace(text: str, label: str) -> tuple[tuple[TraceEntry, ...], list[str]]:
    """Every entry and every problem, each ``<label> line N: ...``; none found is a problem."""
    found: list[TraceEntry] = []
    problems: list[str] = []
    previous: TraceEntry | None = None
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{label} line {n}"
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not JSON"
            problems.append(f"{where}: invalid JSON: {reason}")
            continue
        entry, problem = _entry(doc, where, n)
        if problem is not None:
            problems.append(problem)
            continue
        assert entry is not None
        if previous is not None and entry.timestamp_ms < previous.timestamp_ms:
            problems.append(
                f"{where}: timestamp_ms: expected {previous.timestamp_ms:g} or later "
                f"(line {previous.line}'s), got {entry.timestamp_ms:g}: the lines must be "
                "in time order"
            )
        found.append(entry)
        previous = entry
    if not found and not problems:
        problems.append(f"{label}: expected at least one request, got none")
    if len(problems) > MAX_LISTED:
        rest = len(problems) - MAX_LISTED
        problems = [*problems[:MAX_LISTED], f"{label}: and {rest} more bad lines"]
    return tuple(found), problems


def _entry(doc: object, where: str, n: int) -> tuple[TraceEntry | None, str | None]:
    if not isinstance(doc, dict):
        return None, f"{where}: expected an object with {', '.join(_REQUIRED)}, got {show(doc)}"
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        return None, f"{where}: missing {', '.join(missing)}"
    ts = doc["timestamp_ms"]
    if not (isinstance(ts, int | float) and not isinstance(ts, bool) and 0 <= ts < 1e15):
        return None, f"{where}: timestamp_ms: expected a number >= 0, got {show(ts)}"
    counts = []
    for key in ("input_tokens", "output_tokens"):
        value = doc[key]
        if not (
            isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_TOKENS
        ):
            return None, f"{where}: {key}: expected a positive integer, got {show(value)}"
        counts.append(value)
    session = doc.get("session_id")
    if session is not None and not isinstance(session, str | int):
        return None, f"{where}: session_id: expected a string or an integer, got {show(session)}"
    hashes = doc.get("hash_ids", [])
    if not (
        isinstance(hashes, list)
        and all(isinstance(h, int) and not isinstance(h, bool) for h in hashes)
    ):
        return None, f"{where}: hash_ids: expected a list of integers, got {show(hashes)}"
    return TraceEntry(
        float(ts),
        counts[0],
        counts[1],
        n,
        None if session is None else str(session),
        tuple(hashes),
    ), None


def schedule(trace: Sequence[TraceEntry], speedup: float) -> tuple[int, ...]:
    """Each request's due time in ns after the first one's: the recorded gaps / ``speedup``.

    Offsets from the first timestamp, not from zero, so a trace cut from the middle of a
    day starts at once. Rounded to whole nanoseconds, each from the start (never summed
    gap by gap), so rounding does not drift over a long trace.
    """
    if not trace:
        return ()
    if speedup <= 0:
        raise ValueError(f"speedup must be positive, got {speedup}")
    t0 = trace[0].timestamp_ms
    return tuple(round((e.timestamp_ms - t0) * 1_000_000 / speedup) for e in trace)
