"""Manual scores: a result file's sample answers out to a spreadsheet and the scores back in.

``loadbench annotate export`` writes one CSV row per model and prompt (:data:`COLUMNS`),
the score cells empty or holding an earlier manual score; a person fills them in (1-5, or
leaves a cell empty for "not scored"); ``loadbench annotate import`` merges the filled
scores into each model's ``quality`` block as ``manual`` entries, replacing the heuristic
or judge score of that prompt. Empty cells change nothing. Everything wrong with the file
is reported at once, each problem naming the file, the line and the field.

Pure: documents and CSV text in, documents and CSV text out; the CLI reads and writes.
"""

from __future__ import annotations

import copy
import csv
import io
import math
from collections.abc import Mapping
from typing import Any

from loadbench.errors import UsageError, show
from loadbench.models.quality import model_quality

COLUMNS = ("model", "prompt_id", "prompt", "answer", "aspects", "score", "note")
REQUIRED = ("model", "prompt_id", "score")
ASPECT_SEPARATOR = "; "


def _models(doc: Mapping[str, Any], path: str) -> list[Mapping[str, Any]]:
    models = doc.get("models")
    if not isinstance(models, list):
        raise UsageError(
            f"{path}: no models list: this result has no sample answers to score "
            "(run with sampling on)"
        )
    return models


def aspects_of(doc: Mapping[str, Any]) -> dict[str, list[str]]:
    """Aspects by prompt id, from the scenario block (``prompt_ids``, ``prompt_aspects``)."""
    scenario = doc.get("scenario") or {}
    ids = scenario.get("prompt_ids") or []
    aspects = scenario.get("prompt_aspects") or []
    return {str(i): [str(a) for a in found] for i, found in zip(ids, aspects, strict=False)}


def _manual(model: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    quality = model.get("quality") or {}
    return {
        str(s["prompt_id"]): s
        for s in quality.get("scores") or ()
        if s.get("method") == "manual" and s.get("score") is not None
    }


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def export_csv(doc: Mapping[str, Any], path: str = "result") -> str:
    """The CSV to fill in: :data:`COLUMNS`, one row per model × sample, ``\\n`` line ends."""
    aspects = aspects_of(doc)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for model in _models(doc, path):
        manual = _manual(model)
        for sample in model.get("samples") or ():
            prompt_id = str(sample["prompt_id"])
            earlier = manual.get(prompt_id) or {}
            writer.writerow(
                (
                    str(model["name"]),
                    prompt_id,
                    str(sample.get("prompt") or ""),
                    str(sample.get("answer") or ""),
                    ASPECT_SEPARATOR.join(aspects.get(prompt_id, ())),
                    _cell(earlier.get("score")),
                    _cell(earlier.get("note")),
                )
            )
    return out.getvalue()


def _score(text: str) -> int | float:
    """A filled score: a number from 1 to 5 (decimals allowed); raises ValueError."""
    value = float(text)
    if not math.isfinite(value) or not 1 <= value <= 5:
        raise ValueError(text)
    return int(value) if value.is_integer() else value


Filled = dict[tuple[str, str], tuple[int | float, str | None, int]]


def read_scores(text: str, csv_path: str) -> tuple[Filled, list[tuple[str, str, int]], list[str]]:
    """The filled rows by (model, prompt id) as (score, note, line); every row's (model,
    prompt id, line); every problem."""
    problems: list[str] = []
    rows: list[tuple[str, str, int]] = []
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        found = ", ".join(header) if header else "nothing"
        problem = f"{csv_path}:1: missing column(s) {', '.join(missing)} (header has {found})"
        return {}, [], [problem]
    filled: Filled = {}
    line = reader.line_num + 1
    for row in reader:
        key = (str(row.get("model") or "").strip(), str(row.get("prompt_id") or "").strip())
        raw = str(row.get("score") or "").strip()
        note = str(row.get("note") or "").strip() or None
        rows.append((*key, line))
        if raw:
            try:
                score = _score(raw)
            except ValueError:
                problems.append(
                    f"{csv_path}:{line}: score: expected a number from 1 to 5 or empty, "
                    f"got {show(raw)}"
                )
            else:
                if key in filled:
                    problems.append(
                        f"{csv_path}:{line}: model, prompt_id: {key[0]} / {key[1]} is scored "
                        f"twice (first on line {filled[key][2]})"
                    )
                filled[key] = (score, note, line)
        line = reader.line_num + 1
    return filled, rows, problems


def import_scores(
    doc: Mapping[str, Any], text: str, *, result_path: str, csv_path: str
) -> dict[str, Any]:
    """A copy of ``doc`` with the CSV's filled scores merged into each model's quality.

    Raises ``UsageError`` listing every problem: a missing column, a score that is not 1-5,
    a row naming a model or prompt the result does not have, a pair scored twice.
    """
    models = _models(doc, result_path)
    filled, rows, problems = read_scores(text, csv_path)
    known = {(str(m["name"]), str(s["prompt_id"])) for m in models for s in m.get("samples") or ()}
    for model, prompt_id, line in rows:
        if (model, prompt_id) not in known:
            problems.append(
                f"{csv_path}:{line}: model, prompt_id: no sample {show(prompt_id)} of model "
                f"{show(model)} in {result_path}"
            )
    if problems:
        raise UsageError("\n".join(problems))
    out = copy.deepcopy(dict(doc))
    for model in out["models"]:
        name = str(model["name"])
        ours = {p: v for (m, p), v in filled.items() if m == name}
        if not ours:
            continue
        earlier = {str(s["prompt_id"]): s for s in (model.get("quality") or {}).get("scores", ())}
        entries = []
        for sample in model.get("samples") or ():
            prompt_id = str(sample["prompt_id"])
            if prompt_id in ours:
                score, note, _ = ours[prompt_id]
                entries.append(
                    {
                        "prompt_id": prompt_id,
                        "method": "manual",
                        "score": score,
                        "verdict": None,
                        "note": note,
                    }
                )
            elif prompt_id in earlier:
                entries.append(dict(earlier[prompt_id]))
        model["quality"] = model_quality(entries)
    return out
