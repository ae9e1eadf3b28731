"""Prompts from a file: ShareGPT conversations, JSONL ``{prompt, output_tokens?}`` or text lines.

Parsing is pure (text in, entries and problems out) and names every bad entry by its line,
so a user fixes a file in one pass; the first ``MAX_LISTED`` are listed, then a count.
Selection is a seeded shuffle, then the length filters, then ``sample``: the same file and
seed always yield the same requests in the same order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loadbench.errors import show
from loadbench.scenario import DatasetFormat, DatasetSpec

__all__ = ["MAX_LISTED", "DatasetEntry", "parse_dataset", "select_entries"]

MAX_LISTED = 20


@dataclass(frozen=True)
class DatasetEntry:
    prompt: str
    line: int  # where the entry starts in the file, 1-based
    output_tokens: int | None = None  # a JSONL entry's own figure
    output_text: str | None = None  # ShareGPT: the answer, counted with the tokenizer later


def parse_dataset(
    text: str, fmt: DatasetFormat, label: str
) -> tuple[tuple[DatasetEntry, ...], list[str]]:
    """Every usable entry and every problem, each ``<label> line N: ...``.

    A ShareGPT conversation with no human turn is skipped, not refused: the public ShareGPT
    dumps have thousands of those, and vLLM's loader skips them too.
    """
    if fmt is DatasetFormat.SHAREGPT:
        found, problems = _sharegpt(text, label)
    elif fmt is DatasetFormat.JSONL:
        found, problems = _jsonl(text, label)
    else:
        found = [DatasetEntry(line.strip(), n) for n, line in _lines(text) if line.strip()]
        problems = []
    if not found and not problems:
        problems.append(f"{label}: expected at least one prompt, got none")
    return tuple(found), _capped(problems, label)


def select_entries(
    entries: Sequence[DatasetEntry],
    spec: DatasetSpec,
    seed: int,
    count: Callable[[str], int],
) -> tuple[DatasetEntry, ...]:
    """Shuffled with ``seed``, filtered by length (``count`` is the workload's tokenizer),
    then the first ``spec.sample``. Lengths are counted only when a filter needs them."""
    order = list(range(len(entries)))
    random.Random(seed).shuffle(order)
    kept: list[DatasetEntry] = []
    for i in order:
        entry = entries[i]
        if spec.min_input_tokens is not None or spec.max_input_tokens is not None:
            n = count(entry.prompt)
            if spec.min_input_tokens is not None and n < spec.min_input_tokens:
                continue
            if spec.max_input_tokens is not None and n > spec.max_input_tokens:
                continue
        if spec.max_output_tokens is not None:
            out = output_hint(entry, count)
            if out is not None and out > spec.max_output_tokens:
                continue
        kept.append(entry)
        if spec.sample is not None and len(kept) == spec.sample:
            break
    return tuple(kept)


def output_hint(entry: DatasetEntry, count: Callable[[str], int]) -> int | None:
    if entry.output_tokens is not None:
        return entry.output_tokens
    return None if entry.output_text is None else max(1, count(entry.output_text))


def _lines(text: str) -> list[tuple[int, str]]:
    return list(enumerate(text.split("\n"), 1))


def _capped(problems: list[str], label: str) -> list[str]:
    if len(problems) <= MAX_LISTED:
        return problems
    rest = len(problems) - MAX_LISTED
    return [*problems[:MAX_LISTED], f"{label}: and {rest} more bad entries"]


def _jsonl(text: str, label: str) -> tuple[list[DatasetEntry], list[str]]:
    found: list[DatasetEntry] = []
    problems: list[str] = []
    for n, line in _lines(text):
        if not line.strip():
            continue
        where = f"{label} line {n}"
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError) as exc:
            problems.append(f"{where}: invalid JSON: {_reason(exc)}")
            continue
        if not isinstance(doc, dict):
            problems.append(f"{where}: expected an object with a prompt, got {show(doc)}")
            continue
        prompt, out = doc.get("prompt"), doc.get("output_tokens")
        if not isinstance(prompt, str) or not prompt.strip():
            problems.append(f"{where}: prompt: expected a non-empty string, got {show(prompt)}")
        elif out is not None and not (
            isinstance(out, int) and not isinstance(out, bool) and out >= 1
        ):
            problems.append(f"{where}: output_tokens: expected a positive integer, got {show(out)}")
        else:
            found.append(DatasetEntry(prompt, n, out))
    return found, problems


def _sharegpt(text: str, label: str) -> tuple[list[DatasetEntry], list[str]]:
    """Walks the top-level list item by item with ``raw_decode``, so each item's line is known."""
    decoder = json.JSONDecoder()
    pos = _skip(text, 0)
    if not text.startswith("[", pos):
        return [], [f"{label}: expected a JSON list of conversations"]
    pos = _skip(text, pos + 1)
    found: list[DatasetEntry] = []
    problems: list[str] = []
    first = True
    while pos < len(text) and text[pos] != "]":
        if not first:
            if text[pos] != ",":
                return found, [
                    *problems,
                    f"{label} line {_line(text, pos)}: invalid JSON: expected , or ]",
                ]
            pos = _skip(text, pos + 1)
        first = False
        line = _line(text, pos)
        try:
            item, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as exc:
            return found, [*problems, f"{label} line {line}: invalid JSON: {_reason(exc)}"]
        pos = _skip(text, pos)
        entry, problem = _conversation(item, f"{label} line {line}", line)
        if problem is not None:
            problems.append(problem)
        elif entry is not None:
            found.append(entry)
    if pos >= len(text):
        problems.append(f"{label} line {_line(text, len(text))}: invalid JSON: expected ]")
    elif _skip(text, pos + 1) != len(text):
        problems.append(f"{label} line {_line(text, pos)}: invalid JSON: text after the list")
    return found, problems


def _conversation(item: object, where: str, line: int) -> tuple[DatasetEntry | None, str | None]:
    turns = item.get("conversations") if isinstance(item, dict) else None
    if not isinstance(turns, list):
        return None, f"{where}: expected an object with a conversations list, got {show(item)}"
    for i, turn in enumerate(turns):
        if not (
            isinstance(turn, dict)
            and isinstance(turn.get("from"), str)
            and isinstance(turn.get("value"), str)
        ):
            return None, f"{where}: conversations[{i}]: expected {{from, value}} strings"
    human = next(
        (i for i, t in enumerate(turns) if t["from"] == "human" and t["value"].strip()), None
    )
    if human is None:
        return None, None
    answer = next((t["value"] for t in turns[human + 1 :] if t["from"] == "gpt"), None)
    return DatasetEntry(turns[human]["value"], line, None, answer), None


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _reason(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    return str(exc).partition(":")[0]
