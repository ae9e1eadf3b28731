"""Quality scores by value: the aspect heuristic, judge verdicts, the quality block, cost."""

from __future__ import annotations

from typing import Any

import pytest

from loadbench.models import (
    combine_scores,
    heuristic_score,
    heuristic_scores,
    judge_prompt,
    model_cost,
    model_quality,
    parse_verdict,
)
from loadbench.models.cost import cost_per_million, measured_watts

# --- the heuristic ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "aspects", "score"),
    [
        ("It measures latency.", ["latency", "measure"], 5.0),  # -s on the answer's word
        ("Requests are QUEUED while batching", ["queue", "batch"], 5.0),  # -ed, -ing, case
        ("the boxes", ["box"], 5.0),  # -es
        ("tail latencies grow", ["latency"], 5.0),  # -ies
        ("they stopped", ["stop"], 5.0),  # doubled consonant
        ("nothing relevant here", ["latency", "throughput"], 1.0),
        ("latency only", ["latency", "throughput"], 3.0),
        ("latency only", ["latency", "throughput", "knee"], 2.33),
        ("coordinated requests were omitted", ["coordinated omission"], 1.0),  # every word
        ("Coordinated omission hides tail latency", ["coordinated omission"], 5.0),
        ("percent", ["percentile"], 1.0),  # a prefix is not a word
        ("latency", ["latencies"], 1.0),  # suffixes go on the answer's words only
    ],
)
def test_heuristic_score_by_value(answer: str, aspects: list[str], score: float) -> None:
    assert heuristic_score(answer, aspects) == score


def test_no_aspects_means_no_heuristic_score() -> None:
    assert heuristic_score("anything at all", []) is None


def test_heuristic_entries_say_what_was_missed_and_skip_failed_samples() -> None:
    samples = [
        {"prompt_id": "p1", "answer": "latency and tokens", "error": None},
        {"prompt_id": "p2", "answer": "", "error": "HTTP 500"},
        {"prompt_id": "p3", "answer": "whatever", "error": None},
    ]
    aspects = {"p1": ["latency", "throughput"], "p2": ["latency"]}
    entries = heuristic_scores(samples, aspects)
    assert [e["score"] for e in entries] == [3.0, None, None]
    assert entries[0]["note"] == "1/2 aspects; missing: throughput"
    assert entries[1]["note"] == "no answer: HTTP 500"
    assert entries[2]["note"] == "no aspects to check"
    assert {e["method"] for e in entries} == {"heuristic"}


# --- judge verdicts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("4", 4),
        (" 5\n", 5),
        ("3.", 3),
        ("Score: 4", 4),
        ("score = 2", 2),
        ("Rating: **2**", 2),
        ("4/5", 4),
        ("I'd say 3 out of 5.", 3),
        ("Score: 4/5", 4),
        ("**4**", 4),
        ('{"score": 4}', 4),
        ('```json\n{"score": "3", "why": "partial"}\n```', 3),
        ("4 - mostly right", 4),
        ("Score: 9, no wait, Score: 3", 3),  # the first *valid* verdict
        ("7", None),  # out of range: skipped, not clamped
        ("0", None),
        ("Score: 6", None),
        ("8/10", None),
        ("4.5", None),
        ('{"score": 11}', None),
        ("the model streams tokens while bench measures latency", None),
        ("", None),
    ],
)
def test_parse_verdict(text: str, verdict: int | None) -> None:
    assert parse_verdict(text) == verdict


def test_the_rubric_asks_for_a_number_and_lists_aspects_only_when_given() -> None:
    with_aspects = judge_prompt("Why p95?", ["tail", "outliers"], "Because.")
    assert "1 to 5" in with_aspects
    assert "Answer only with the number" in with_aspects
    assert "tail; outliers" in with_aspects
    assert with_aspects.index("Why p95?") < with_aspects.index("Because.")
    assert "aspects" not in judge_prompt("Why p95?", [], "Because.")


# --- the quality block --------------------------------------------------------------------


def _e(prompt_id: str, method: str, score: float | None) -> dict[str, Any]:
    return {"prompt_id": prompt_id, "method": method, "score": score, "verdict": None, "note": None}


def test_quality_is_the_mean_of_scored_prompts_with_one_method() -> None:
    block = model_quality([_e("p1", "judge", 4), _e("p2", "judge", None), _e("p3", "judge", 5)])
    assert block is not None
    assert (block["method"], block["score"], len(block["scores"])) == ("judge", 4.5, 3)


def test_quality_is_mixed_when_scored_prompts_differ_in_method() -> None:
    block = model_quality(
        [_e("p1", "judge", 2), _e("p2", "manual", 3), _e("p3", "heuristic", None)]
    )
    assert block is not None
    assert (block["method"], block["score"]) == ("mixed", 2.5)


def test_quality_without_any_score_has_a_method_and_no_score() -> None:
    block = model_quality([_e("p1", "judge", None)])
    assert block is not None
    assert (block["method"], block["score"]) == ("judge", None)
    assert model_quality([]) is None


def test_combine_prefers_a_parsed_judge_verdict_and_keeps_an_unparsed_one() -> None:
    judged = [
        {**_e("p1", "judge", 4), "verdict": "4"},
        {**_e("p2", "judge", None), "verdict": "I cannot say", "note": "unparseable"},
    ]
    heuristic = [_e("p1", "heuristic", 3.0), _e("p2", "heuristic", 5.0), _e("p3", "heuristic", 1.0)]
    combined = combine_scores(judged, heuristic)
    assert [(e["method"], e["score"]) for e in combined] == [
        ("judge", 4),
        ("heuristic", 5.0),
        ("heuristic", 1.0),
    ]
    assert combined[1]["verdict"] == "I cannot say"
    assert combined[1]["note"] == "judge: unparseable; heuristic used"


def test_an_unparsed_verdict_without_a_heuristic_stays_the_judges() -> None:
    """No aspects, so no heuristic score: the entry must not claim a heuristic was used."""
    judged = [{**_e("p1", "judge", None), "verdict": "hmm", "note": "unparseable"}]
    (entry,) = combine_scores(judged, [_e("p1", "heuristic", None)])
    assert (entry["method"], entry["score"], entry["verdict"]) == ("judge", None, "hmm")
    assert entry["note"] == "unparseable"


# --- cost ---------------------------------------------------------------------------------


def _stage(label: str, tok_s: float, energy: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    server = None if energy is None else {"energy": energy}
    return {"label": label, "throughput": {"output_tokens_per_s": tok_s}, "server": server}


def test_cost_formula() -> None:
    # 300 W at 100 tok/s: a million tokens take 10^4 s, 3×10^6 J, 0.8333 kWh; at 0.30/kWh.
    assert cost_per_million(300.0, 100.0, 0.30) == pytest.approx(0.25)


def test_declared_watts_price_every_stage() -> None:
    stages = [_stage("c=1", 50.0), _stage("c=8", 400.0), _stage("c=16", 0.0)]
    block = model_cost(stages, price_per_kwh=0.30, currency="EUR", device_watts=300.0)
    assert block == {
        "currency": "EUR",
        "price_per_kwh": 0.30,
        "watts": 300.0,
        "watts_source": "declared",
        "per_million_output_tokens": {"c=1": 0.5, "c=8": 0.0625},  # no tokens: no cost
    }


def test_measured_gpu_watts_per_stage_win_over_declared() -> None:
    gpu = [
        {"meter": "gpu0 H200", "method": "NVML energy counter", "joules": 2000.0, "seconds": 10.0},
        {"meter": "gpu1 H200", "method": "NVML energy counter", "joules": 1000.0, "seconds": 10.0},
    ]
    rapl = [{"meter": "rapl package-0", "method": "RAPL counter", "joules": 500.0, "seconds": 10.0}]
    stages = [_stage("c=1", 100.0, gpu + rapl), _stage("c=8", 400.0, gpu[:1] + rapl)]
    block = model_cost(stages, price_per_kwh=0.30, device_watts=999.0)
    assert block is not None
    assert block["watts_source"] == "measured-nvml"
    assert block["watts"] == 250.0  # mean of the stages' 300 W and 200 W
    assert block["per_million_output_tokens"] == {
        "c=1": pytest.approx(cost_per_million(300.0, 100.0, 0.30), rel=1e-5),
        "c=8": pytest.approx(cost_per_million(200.0, 400.0, 0.30), rel=1e-5),
    }


def test_rapl_packages_without_psys_when_there_is_no_gpu() -> None:
    rapl = [
        {"meter": "rapl package-0", "method": "RAPL counter", "joules": 400.0, "seconds": 8.0},
        {"meter": "rapl package-1", "method": "RAPL counter", "joules": 400.0, "seconds": 8.0},
        {"meter": "rapl psys", "method": "RAPL counter", "joules": 2000.0, "seconds": 8.0},
    ]
    assert measured_watts(_stage("c=1", 10.0, rapl)) == (100.0, "measured-rapl")


def test_a_stage_without_a_meter_falls_back_to_declared_for_all_or_to_none() -> None:
    gpu = [{"meter": "gpu0 X", "method": "NVML energy counter", "joules": 100.0, "seconds": 1.0}]
    stages = [_stage("c=1", 10.0, gpu), _stage("c=2", 20.0)]
    declared = model_cost(stages, price_per_kwh=0.2, device_watts=50.0)
    assert declared is not None
    assert declared["watts_source"] == "declared"
    assert model_cost(stages, price_per_kwh=0.2) is None
    assert model_cost(stages, price_per_kwh=None, device_watts=50.0) is None
