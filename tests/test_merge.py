"""Merge: exact histograms, summed counters, the schema, and refusals naming the files."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadbench.errors import UsageError
from loadbench.metrics import decode, summarize
from loadbench.results.file import schema
from loadbench.results.merge import merge_results
from tests.test_analysis import make_doc, make_stage


def _counts(blob: str) -> list[int]:
    return list(decode(blob).counts)


@settings(deadline=None, max_examples=25)
@given(
    values=st.lists(st.integers(0, 5_000_000), min_size=2, max_size=80),
    cut=st.integers(1, 79),
)
def test_merging_a_split_gives_the_histogram_of_the_whole(values: list[int], cut: int) -> None:
    cut = min(cut, len(values) - 1)
    ms = [v / 1000 for v in values]
    whole = make_stage(ttft_ms=ms)
    parts = [make_doc([make_stage(ttft_ms=ms[:cut])]), make_doc([make_stage(ttft_ms=ms[cut:])])]
    (stage,) = merge_results(parts, ["a.json", "b.json"])["stages"]
    for name in ("ttft", "itl", "tpot", "e2e"):
        assert _counts(stage["histograms"][name]) == _counts(whole["histograms"][name])
        assert stage["latency_ms"][name] == whole["latency_ms"][name]
    assert stage["requests"]["ok"] == len(values)


def _two_generators() -> list[dict[str, Any]]:
    a = make_stage(
        ttft_ms=[50.0] * 30,
        failed=2,
        duration_s=10.0,
        achieved_concurrency=3.9,
        pacing={"busy_fraction": 0.95},
        goodput={"good": 25, "requests_per_s": 2.5},
        started_at="2026-01-01T00:00:01.000Z",
        finished_at="2026-01-01T00:00:11.000Z",
    )
    b = make_stage(
        ttft_ms=[70.0] * 20,
        failed=1,
        duration_s=12.0,
        achieved_concurrency=3.7,
        pacing={"busy_fraction": 0.85},
        goodput={"good": 15, "requests_per_s": 1.25},
        started_at="2026-01-01T00:00:00.500Z",
        finished_at="2026-01-01T00:00:10.000Z",
    )
    b["errors"] = {"timeout": 1}
    b["error_samples"] = {"timeout": "read timed out"}
    b["tokens"]["counted_by"] = "events"
    b["client"] = {**b["client"], "cpu_percent": 95.0, "bottleneck": True, "warning": "slow"}
    b["interrupted"] = True
    doc_a = make_doc([a], warnings=["one"])
    doc_b = make_doc(
        [b],
        warnings=["two"],
        started_at="2026-01-01T00:00:00.100Z",
        finished_at="2026-01-01T00:01:30.000Z",
    )
    return [doc_a, doc_b]


def test_merged_stage_sums_and_combines() -> None:
    docs = _two_generators()
    merged = merge_results(docs, ["gen1.json", "gen2.json"])
    (stage,) = merged["stages"]
    assert (stage["concurrency"], stage["label"], stage["generators"]) == (4, "c=4", 2)
    assert stage["requests"] == {"sent": 53, "ok": 50, "failed": 3, "warmup": 4}
    assert stage["errors"] == {"http_500": 2, "timeout": 1}
    assert stage["error_samples"] == {"http_500": "boom", "timeout": "read timed out"}
    assert stage["duration_s"] == 12.0
    assert stage["throughput"] == {
        "requests_per_s": pytest.approx(30 / 10 + 20 / 12, abs=1e-4),
        "output_tokens_per_s": pytest.approx(30 * 32 / 10 + 20 * 32 / 12, abs=1e-3),
    }
    assert stage["tokens"] == {"output": 50 * 32, "counted_by": "mixed"}
    assert stage["achieved_concurrency"] == pytest.approx(7.6)
    assert stage["pacing"] == {"busy_fraction": 0.9}
    assert stage["goodput"] == {"good": 40, "requests_per_s": 3.75}
    assert stage["client"]["cpu_percent"] == 95.0
    assert (stage["client"]["bottleneck"], stage["client"]["warning"]) == (True, "slow")
    assert stage["interrupted"] is True
    assert (stage["started_at"], stage["finished_at"]) == (
        "2026-01-01T00:00:00.500Z",
        "2026-01-01T00:00:11.000Z",
    )
    ttft = decode(stage["histograms"]["ttft"])
    assert stage["latency_ms"]["ttft"] == summarize(ttft).to_dict()
    assert stage["latency_ms"]["ttft"]["count"] == 50


def test_merged_document_top_level() -> None:
    merged = merge_results(_two_generators(), ["gen1.json", "gen2.json"])
    assert merged["merged_from"] == ["gen1.json", "gen2.json"]
    assert merged["started_at"] == "2026-01-01T00:00:00.000Z"
    assert merged["finished_at"] == "2026-01-01T00:01:30.000Z"
    assert merged["interrupted"] is False
    assert merged["warnings"] == ["gen1.json: one", "gen2.json: two"]
    (point,) = merged["summary"]["models"][0]["points"]
    assert point["load"] == 8.0  # two generators of c=4
    assert point["label"] == "c=4 ×2"


def test_merged_document_validates_against_the_schema() -> None:
    docs = _two_generators()
    jsonschema.validate(docs[0], schema())
    merged = merge_results(docs, ["gen1.json", "gen2.json"])
    jsonschema.validate(merged, schema())
    open_loop = [make_doc([make_stage(rate=2.0), make_stage("n", rate=2.0)]) for _ in range(3)]
    jsonschema.validate(merge_results(open_loop, ["a", "b", "c"]), schema())


def test_merging_a_merged_file_counts_every_generator() -> None:
    once = merge_results([make_doc([make_stage()])] * 2, ["a", "b"])
    twice = merge_results([once, make_doc([make_stage()])], ["ab", "c"])
    assert twice["stages"][0]["generators"] == 3


def test_goodput_only_when_every_part_has_it() -> None:
    with_slo = make_doc([make_stage(goodput={"good": 1, "requests_per_s": 0.1})])
    without = make_doc([make_stage(goodput=None)])
    assert merge_results([with_slo, without], ["a", "b"])["stages"][0]["goodput"] is None
    bare = merge_results([make_doc([make_stage()])] * 2, ["a", "b"])["stages"][0]
    assert "goodput" not in bare
    assert "achieved_concurrency" not in bare


def test_slo_of_the_first_file_is_applied_again() -> None:
    first = make_doc([make_stage(ttft_ms=[600.0] * 20)])
    first["summary"] = {"knee_rule": "", "slo": ["ttft.p95<=500ms", "error_rate<1%"], "models": []}
    merged = merge_results([first, make_doc([make_stage()])], ["a", "b"])
    assert merged["summary"]["slo"] == ["ttft.p95<=500ms", "error_rate<1%"]
    (point,) = merged["summary"]["models"][0]["points"]
    assert point["meets_slo"] is False


def test_different_scenarios_are_refused_naming_the_files() -> None:
    a, b = make_doc([make_stage()], name="demo"), make_doc([make_stage()], name="other")
    with pytest.raises(UsageError) as info:
        merge_results([a, b], ["a.json", "b.json"])
    assert "b.json: scenario 'other', but a.json has 'demo'" in str(info.value)


def test_different_stages_are_refused_listing_every_difference() -> None:
    a = make_doc([make_stage(concurrency=c) for c in (1, 2)])
    b = make_doc([make_stage(concurrency=c) for c in (2, 4)])
    c = make_doc([make_stage(concurrency=c) for c in (1, 2)], name="x")
    with pytest.raises(UsageError) as info:
        merge_results([a, b, c], ["a.json", "b.json", "c.json"])
    lines = str(info.value).splitlines()
    assert lines[1:] == [
        "b.json: lacks stages m c=1 that a.json has",
        "b.json: has stages m c=4 that a.json lacks",
        "c.json: scenario 'x', but a.json has 'demo'",
    ]


def test_the_same_file_twice_is_refused() -> None:
    doc = make_doc([make_stage()])
    with pytest.raises(UsageError, match=r"a\.json: given twice"):
        merge_results([doc, doc], ["a.json", "a.json"])


def test_runs_at_different_times_get_a_warning() -> None:
    a = make_doc([make_stage()])
    b = make_doc(
        [make_stage()], started_at="2026-01-02T00:00:00.000Z", finished_at="2026-01-02T00:01:00Z"
    )
    warnings = merge_results([a, b], ["a.json", "b.json"])["warnings"]
    assert len(warnings) == 1
    assert warnings[0].startswith("b.json ran 2026-01-02T00:00:00.000Z..")
    assert "not at the same time as a.json" in warnings[0]


def test_a_broken_histogram_names_its_file() -> None:
    a, b = make_doc([make_stage()]), make_doc([make_stage()])
    b["stages"][0]["histograms"]["itl"] = "garbage"
    with pytest.raises(UsageError, match=r"^b.json: stage m c=4: histograms.itl: not a loadbench"):
        merge_results([a, b], ["a.json", "b.json"])


def test_workload_lengths_merge_weighted_by_ok_requests() -> None:
    from loadbench.results.merge import merge_lengths

    def part(ok: int, measured: float, short: float, turn_ttft: float) -> dict[str, object]:
        return {
            "ok": ok,
            "tokenizer": "t",
            "approximate": False,
            "input_tokens": {
                "requested_mean": 100.0,
                "counted_mean": 100.0,
                "measured_mean": 100.0,
            },
            "output_tokens": {
                "requested_mean": 16.0,
                "measured_mean": measured,
                "counted_by_usage": ok,
            },
            "osl_mismatch": short,
            "turns": [
                {"turn": 1, "ok": ok, "ttft_ms": {"p50": 1.0, "p95": 2.0, "mean": turn_ttft}}
            ],
        }

    merged = merge_lengths([part(30, 16.0, 0.0, 10.0), part(10, 12.0, 0.5, 30.0)])
    assert merged["ok"] == 40
    assert merged["output_tokens"] == {
        "requested_mean": 16.0,
        "measured_mean": 15.0,
        "counted_by_usage": 40,
    }
    assert merged["osl_mismatch"] == 0.125
    (turn,) = merged["turns"]
    assert turn["ok"] == 40
    assert turn["ttft_ms"] == {"p50": None, "p95": None, "mean": 15.0}
