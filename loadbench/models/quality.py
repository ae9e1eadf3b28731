"""How good an answer is, on a 1-5 scale, three ways: a heuristic, a judge model, a person.

The heuristic is deliberately crude and says so: a prompt lists the aspects a good answer
covers (``"coordinated omission"``, ``"percentile"``), and an answer scores
``1 + 4 × covered / aspects``. An aspect is covered when each of its words appears in the
answer, ignoring case and allowing the simple English suffixes -s, -es, -ed and -ing on the
answer's words (``measures`` covers ``measure``; ``latencies`` covers ``latency``). It tells
a model that ignores the question from one that answers it; it cannot tell a right answer
from a wrong one that uses the same words. A prompt without aspects gets no heuristic score
(None), never a guess.

A judge model is asked with :data:`RUBRIC` and answers with a number; :func:`parse_verdict`
reads the forms judges actually write, and anything else is None ("unparseable"), never a
number. Manual scores come back through ``loadbench annotate``. :func:`model_quality`
builds the result document's ``quality`` block from per-prompt score entries.

Pure: strings and dicts in, values out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_WORD = re.compile(r"\w+")

RUBRIC = (
    "You are grading the answer of an AI assistant.\n"
    "Rate how well the answer responds to the prompt, on a scale of 1 to 5:\n"
    "1 = wrong, off-topic or empty; 2 = mostly wrong or missing most of what was asked; "
    "3 = partly right, with gaps or errors; 4 = right and relevant, with minor gaps; "
    "5 = right, complete and clear.\n"
    "{aspects}"
    "Answer only with the number (1, 2, 3, 4 or 5), nothing else.\n\n"
    "PROMPT:\n{prompt}\n\nANSWER:\n{answer}\n"
)
_ASPECTS_LINE = "A complete answer covers these aspects: {}.\n"


def judge_prompt(prompt: str, aspects: Sequence[str], answer: str) -> str:
    """The fixed rubric filled in for one answer; aspects are listed only when given."""
    listed = _ASPECTS_LINE.format("; ".join(aspects)) if aspects else ""
    return RUBRIC.format(aspects=listed, prompt=prompt, answer=answer)


# --- heuristic ---------------------------------------------------------------------------


def _forms(text: str) -> set[str]:
    """The answer's words lower-cased, each with its simple-suffix stems beside it."""
    forms: set[str] = set()
    for word in _WORD.findall(text.lower()):
        forms.add(word)
        for suffix in ("es", "s", "ed", "ing"):
            stem = word[: -len(suffix)]
            if word.endswith(suffix) and len(stem) >= 2:
                forms.add(stem)
                if suffix in ("ed", "ing"):
                    forms.add(stem + "e")  # measured, measuring -> measure
                    if len(stem) >= 3 and stem[-1] == stem[-2]:
                        forms.add(stem[:-1])  # stopped -> stop
        if word.endswith("ies") and len(word) > 4:
            forms.add(word[:-3] + "y")  # latencies -> latency
    return forms


def covered(answer: str, aspects: Sequence[str]) -> list[bool]:
    """Per aspect: does the answer contain each of its words (see the module's rule)?"""
    forms = _forms(answer)
    out = []
    for aspect in aspects:
        words = _WORD.findall(aspect.lower())
        out.append(bool(words) and all(w in forms for w in words))
    return out


def heuristic_score(answer: str, aspects: Sequence[str]) -> float | None:
    """``1 + 4 × covered / aspects``, 2 decimals; None without aspects."""
    if not aspects:
        return None
    hits = covered(answer, aspects)
    return round(1 + 4 * sum(hits) / len(hits), 2)


def heuristic_scores(
    samples: Sequence[Mapping[str, Any]], aspects_by_prompt: Mapping[str, Sequence[str]]
) -> list[dict[str, Any]]:
    """One score entry per sample, the note naming the aspects missed."""
    out = []
    for sample in samples:
        prompt_id = str(sample["prompt_id"])
        aspects = list(aspects_by_prompt.get(prompt_id, ()))
        score: float | None = None
        if sample.get("error"):
            note = f"no answer: {sample['error']}"
        elif not aspects:
            note = "no aspects to check"
        else:
            hits = covered(str(sample.get("answer") or ""), aspects)
            score = round(1 + 4 * sum(hits) / len(hits), 2)
            missed = [a for a, hit in zip(aspects, hits, strict=True) if not hit]
            note = f"{sum(hits)}/{len(hits)} aspects" + (
                f"; missing: {', '.join(missed)}" if missed else ""
            )
        out.append(_entry(prompt_id, "heuristic", score, None, note))
    return out


# --- judge verdicts ----------------------------------------------------------------------

_VERDICT = re.compile(
    r"(?i)(?:score|rating|verdict|grade)\s*(?:is|of)?\s*[:=]?\s*\**\s*(\d+)(?![.,]?\d)(?!\s*/)"
    r"|(?<![\d.])(\d+)\s*(?:/|out\s+of)\s*5(?!\d|[.,]\d)"
    r"|\*\*\s*(\d+)\s*\*\*"
)
_LEADING = re.compile(r"^[\s*\"'`(\[]*(\d+)[\s*\"'`)\]]*(?:$|[.:;,\-—](?!\d)|\n)")
_JSON = re.compile(r"\{[^{}]*\}")


def _valid(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 1 <= value <= 5 else None


def parse_verdict(text: str) -> int | None:
    """The first valid 1-5 verdict in a judge's answer, or None ("unparseable").

    Read, in order of where they stand in the text: a JSON object's ``"score"``, ``Score:
    4`` (also rating, verdict, grade), ``4/5`` or ``4 out of 5``, ``**4**``, and a number
    that opens the answer (``4``, ``4.``, ``4 - good``). A candidate outside 1-5 is
    skipped, not clamped; ``4.5`` is not a verdict.
    """
    found: list[tuple[int, int]] = []  # (position, value)
    for match in _JSON.finditer(text):
        try:
            obj = json.loads(match.group(0))
        except ValueError:
            continue
        if isinstance(obj, dict) and (v := _valid(obj.get("score"))) is not None:
            found.append((match.start(), v))
    for match in _VERDICT.finditer(text):
        digits = next(g for g in match.groups() if g is not None)
        if (v := _valid(int(digits))) is not None:
            found.append((match.start(), v))
    lead = _LEADING.match(text)
    if lead and (v := _valid(int(lead.group(1)))) is not None:
        found.append((lead.start(), v))
    return min(found)[1] if found else None


# --- the quality block -------------------------------------------------------------------


def _entry(
    prompt_id: str, method: str, score: float | None, verdict: str | None, note: str | None
) -> dict[str, Any]:
    return {
        "prompt_id": prompt_id,
        "method": method,
        "score": score,
        "verdict": verdict,
        "note": note,
    }


def combine_scores(
    judged: Sequence[Mapping[str, Any]], heuristic: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Per prompt, the judge's entry when its verdict parsed, else the heuristic's with the
    judge's raw verdict kept beside it; prompts in the heuristic list's order. A prompt
    without aspects has no heuristic score: its unparseable judge entry stays the judge's."""
    by_id = {str(e["prompt_id"]): e for e in judged}
    out = []
    for h in heuristic:
        j = by_id.get(str(h["prompt_id"]))
        if j is not None and (j.get("score") is not None or h.get("score") is None):
            out.append(dict(j))  # parsed, or unparseable with no heuristic to stand in
        elif j is not None:
            note = f"judge: {j.get('note') or 'unparseable'}; heuristic used"
            out.append(_entry(str(h["prompt_id"]), "heuristic", h["score"], j["verdict"], note))
        else:
            out.append(dict(h))
    return out


def model_quality(scores: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The ``quality`` block: the mean of the scored prompts (None when none has a score)
    and the method, ``mixed`` when the scored prompts were scored different ways. None
    when there are no entries at all (the model was not scored)."""
    if not scores:
        return None
    scored = [s for s in scores if s.get("score") is not None]
    methods = {str(s["method"]) for s in (scored or scores)}
    mean = round(sum(float(s["score"]) for s in scored) / len(scored), 2) if scored else None
    return {
        "method": methods.pop() if len(methods) == 1 else "mixed",
        "score": mean,
        "scores": [dict(s) for s in scores],
    }
