"""A judge model scores the sample answers: the fixed rubric at temperature 0, one answer at
a time, its verdict read by :func:`loadbench.models.quality.parse_verdict`.

Not the hot path (like :mod:`loadbench.models.samples`). The judge's raw reply is kept,
cut to about 200 characters, so a person can see why a verdict did or did not parse; an
unparseable reply scores None, never a number. A sample that has no answer (its request
failed) is not sent to the judge. The judge may be any OpenAI-compatible server, the one
under test or another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loadbench.models.quality import judge_prompt, parse_verdict
from loadbench.models.samples import collect_samples

VERDICT_CHARS = 200
_JUDGE_TOKENS = 16  # room for "Score: 4" and the chatter some judges add anyway


async def judge_samples(
    judge_base_url: str,
    judge_model: str,
    samples: Sequence[Mapping[str, Any]],
    aspects_by_prompt: Mapping[str, Sequence[str]],
    *,
    api_key: str | None,
    timeout_s: float,
) -> list[dict[str, Any]]:
    """One ``judge`` score entry per sample, in order (see ``quality.model_quality``).

    Raises ``TargetUnreachable`` when the judge's server cannot be reached at all; every
    other failure is the entry's note, with score None.
    """
    asks = [
        (
            str(s["prompt_id"]),
            judge_prompt(
                str(s["prompt"]),
                list(aspects_by_prompt.get(str(s["prompt_id"]), ())),
                str(s.get("answer") or ""),
            ),
        )
        for s in samples
        if not s.get("error")
    ]
    replies = (
        {
            str(r["prompt_id"]): r
            for r in await collect_samples(
                judge_base_url,
                judge_model,
                asks,
                max_tokens=_JUDGE_TOKENS,
                temperature=0,
                extra={},
                api_key=api_key,
                timeout_s=timeout_s,
                limit_bytes=VERDICT_CHARS * 4,
            )
        }
        if asks
        else {}
    )
    out = []
    for sample in samples:
        prompt_id = str(sample["prompt_id"])
        reply = replies.get(prompt_id)
        score: int | None = None
        verdict: str | None = None
        if reply is None:
            note: str | None = f"no answer to judge: {sample.get('error')}"
        elif reply["error"]:
            note = f"judge failed: {reply['error']}"
        else:
            verdict = " ".join(str(reply["answer"]).split())[:VERDICT_CHARS]
            score = parse_verdict(str(reply["answer"]))
            note = None if score is not None else "unparseable"
        out.append(
            {
                "prompt_id": prompt_id,
                "method": "judge",
                "score": score,
                "verdict": verdict,
                "note": note,
            }
        )
    return out
