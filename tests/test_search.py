"""``[load] search``: the bisection by value and by property, its scenario checks, its
replay from a result file, and a real search of the simulator's known capacity."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadbench.errors import ScenarioError
from loadbench.results.analysis import summarize_run
from loadbench.results.file import schema
from loadbench.results.search import search_block, search_line, search_summary, stage_meets
from loadbench.run.search import (
    SearchState,
    max_probes,
    next_probe,
    record_probe,
    replay_search,
    search_plans,
    search_stages,
    start_search,
)
from loadbench.scenario import LoadMode, SearchSpec, apply_overrides, load_scenario
from loadbench.thresholds import parse_threshold

# -- the bisection, by value -----------------------------------------------------------------


def run_search(spec: SearchSpec, meets: Callable[[float], bool]) -> SearchState:
    state = start_search(spec)
    while (value := next_probe(state)) is not None:
        state = record_probe(state, meets(value))
    return state


def test_a_concurrency_search_reads_like_the_brief() -> None:
    state = run_search(SearchSpec(LoadMode.CONCURRENCY, 1, 12, 1), lambda c: c <= 4)
    assert [(p.value, p.meets) for p in state.probes] == [
        (1, True),
        (12, False),
        (6, False),
        (3, True),
        (4, True),
        (5, False),
    ]
    assert state.answer == 4
    assert state.bracket == (4, 5)
    assert all(type(p.value) is int for p in state.probes)  # c=4, never c=4.0
    assert state.reason == "the bracket is no wider than the precision (1)"


def test_a_rate_search_walks_a_grid_of_sixteenths() -> None:
    state = run_search(SearchSpec(LoadMode.RATE, 2.0, 18.0, 1.0), lambda r: r <= 11.5)
    assert [p.value for p in state.probes] == [2.0, 18.0, 10.0, 14.0, 12.0, 11.0]
    assert state.answer == 11.0
    assert state.bracket == (11.0, 12.0)


def test_even_low_fails_and_high_meets_end_at_once() -> None:
    spec = SearchSpec(LoadMode.RATE, 1.0, 9.0, 0.5)
    low_fails = run_search(spec, lambda r: False)
    assert [p.value for p in low_fails.probes] == [1.0]
    assert low_fails.answer is None
    assert low_fails.bracket == (None, 1.0)
    assert low_fails.reason.startswith("even low (1) fails")
    high_meets = run_search(spec, lambda r: True)
    assert [p.value for p in high_meets.probes] == [1.0, 9.0]
    assert high_meets.answer == 9.0
    assert high_meets.bracket == (9.0, None)
    assert high_meets.reason.startswith("high (9) meets every limit: raise high")


def test_a_coarse_concurrency_precision_stops_early() -> None:
    state = run_search(SearchSpec(LoadMode.CONCURRENCY, 1, 65, 8), lambda c: c <= 30)
    lo, hi = state.bracket
    assert lo is not None
    assert hi is not None
    assert hi - lo <= 8
    assert lo <= 30 < hi
    assert len(state.probes) <= max_probes(state.spec) == 2 + 3


def test_nothing_is_due_after_the_end() -> None:
    state = run_search(SearchSpec(LoadMode.CONCURRENCY, 1, 2, 1), lambda c: True)
    with pytest.raises(ValueError, match="nothing was due"):
        record_probe(state, True)


# -- the bisection, by property ----------------------------------------------------------


@st.composite
def searches(draw: st.DrawFn) -> tuple[SearchSpec, float]:
    """A valid spec (as the scenario reader accepts it) and a threshold anywhere around it."""
    if draw(st.booleans()):
        low = draw(st.integers(1, 5000))
        high = draw(st.integers(low + 1, low + 20000))
        precision: float = draw(st.integers(1, max(1, (high - low) * 2)))
        spec = SearchSpec(LoadMode.CONCURRENCY, low, high, precision)
        t = draw(st.floats(low - 2, high + 2))
    else:
        low_f = draw(st.floats(0.001, 1e4))
        high_f = draw(st.floats(low_f * 1.0001 + 1e-6, 1e5))
        ratio = draw(st.floats(1.0 / 2**20, 4.0))
        spec = SearchSpec(LoadMode.RATE, low_f, high_f, (high_f - low_f) * ratio)
        t = draw(st.floats(low_f * 0.5, high_f * 1.5))
    return spec, t


@given(searches())
@settings(max_examples=400)
def test_bisection_finds_a_monotone_threshold(case: tuple[SearchSpec, float]) -> None:
    """Against a server that meets every load up to ``t``: the answer is within the
    precision below ``t``, every probe is inside [low, high], and the count is bounded."""
    spec, t = case
    state = run_search(spec, lambda v: v <= t)
    values = [p.value for p in state.probes]
    assert all(spec.low <= v <= spec.high for v in values)
    assert len(values) == len(set(values))
    width = spec.high - spec.low
    assert len(values) <= max(0, math.ceil(math.log2(width / spec.precision))) + 2
    assert len(values) <= max_probes(spec)
    if t < spec.low:
        assert state.answer is None
    elif t >= spec.high:
        assert state.answer == spec.high
    else:
        assert state.answer is not None
        assert state.answer <= t
        assert t - state.answer <= spec.precision * (1 + 1e-9)
        lo, hi = state.bracket
        assert hi is not None
        assert lo is not None
        assert lo <= t < hi
    # What a result file tells replays to the same search.
    told = [(p.value, p.meets, f"x={p.value}", None) for p in state.probes]
    assert replay_search(spec, told) == state


def test_a_replay_stops_where_the_stages_leave_the_search() -> None:
    spec = SearchSpec(LoadMode.CONCURRENCY, 1, 12, 1)
    told = [(1, True, "c=1", None), (12, False, "c=12", None), (7, True, "c=7", None)]
    state = replay_search(spec, told)
    assert [p.value for p in state.probes] == [1, 12]
    assert not state.done
    assert state.reason == "not finished"


def test_a_stage_whose_warmup_all_failed_ends_the_search() -> None:
    spec = SearchSpec(LoadMode.CONCURRENCY, 1, 12, 1)
    told = [(1, True, "c=1", None), (12, False, "c=12", "warmup_failed")]
    state = replay_search(spec, told)
    assert state.done
    assert state.answer == 1
    assert state.reason == "c=12: every warm-up request failed: the model is not serving"


# -- scenario checks -----------------------------------------------------------------------

SEARCH_SCENARIO = """\
name = "search-test"
[target.simulate]
ttft_ms = 50
itl_ms = 2
slots = 4
[[models]]
name = "sim-model"
[prompts]
items = ["hello there", "general kenobi"]
[request]
max_tokens = 8
[load]
search = {search}
requests = 24
warmup = 4
seed = 1
[slo]
ttft_ms = {{ p95 = 80 }}
"""


def scenario_text(search: str, slo: bool = True) -> str:
    text = SEARCH_SCENARIO.format(search=search)
    return text if slo else text.split("[slo]")[0]


def problems_of(tmp_path: Path, text: str) -> tuple[str, ...]:
    path = tmp_path / "s.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, env={})
    return info.value.problems


def test_a_search_is_read_with_its_default_precision(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(scenario_text('{ over = "rate", low = 2, high = 10 }'), encoding="utf-8")
    s = load_scenario(path, env={})
    assert s.load.search == SearchSpec(LoadMode.RATE, 2.0, 10.0, 0.5)
    assert s.load.mode is LoadMode.RATE
    assert s.load.rate == ()
    assert s.load.concurrency == ()
    assert s.to_dict()["load"]["search"] == {  # type: ignore[index]
        "over": "rate",
        "low": 2.0,
        "high": 10.0,
        "precision": 0.5,
    }
    path.write_text(scenario_text('{ over = "concurrency", low = 1, high = 8 }'), "utf-8")
    s = load_scenario(path, env={})
    assert s.load.search == SearchSpec(LoadMode.CONCURRENCY, 1, 8, 1)
    assert s.load.mode is LoadMode.CONCURRENCY


@pytest.mark.parametrize(
    ("search", "problem"),
    [
        (
            '{ over = "rate", low = 8, high = 8 }',
            "load.search: expected low < high, got low = 8 and high = 8: the bracket is empty",
        ),
        (
            '{ over = "concurrency", low = 9, high = 3 }',
            "load.search: expected low < high, got low = 9 and high = 3: the bracket is empty",
        ),
        (
            '{ over = "rate", low = 0, high = 8 }',
            "load.search.low: expected a positive number, got 0",
        ),
        (
            '{ over = "rate", low = 1, high = 8, precision = 0 }',
            "load.search.precision: expected a positive number, got 0",
        ),
        (
            '{ over = "concurrency", low = 1.5, high = 8 }',
            "load.search.low: expected a positive integer, got 1.5",
        ),
        (
            '{ over = "concurrency", low = 1, high = 8, precision = 0.5 }',
            "load.search.precision: expected a positive integer, got 0.5",
        ),
        (
            '{ over = "rate", low = 0.0001, high = 8 }',
            "load.search.low: expected a rate of at least 0.001 requests/s, got 0.0001",
        ),
        (
            '{ over = "rate", low = 1, high = 2, precision = 1e-9 }',
            "load.search.precision: expected at least (high - low) / 1048576 = 9.54e-07, got 1e-09",
        ),
        ('{ over = "load", low = 1, high = 2 }', "load.search.over: expected one of"),
        ("{ low = 1, high = 2 }", "load.search: expected over, low and high, missing over"),
        ('{ over = "rate", low = 1, high = 2, step = 1 }', "load.search: unknown key 'step'"),
        ("8", "load.search: expected a table such as"),
    ],
)
def test_each_bad_search_reads_exactly(tmp_path: Path, search: str, problem: str) -> None:
    problems = problems_of(tmp_path, scenario_text(search))
    assert len(problems) == 1
    assert problems[0].startswith(problem)


def test_a_search_needs_an_slo_and_no_list(tmp_path: Path) -> None:
    search = '{ over = "concurrency", low = 1, high = 8 }'
    assert problems_of(tmp_path, scenario_text(search, slo=False)) == (
        "load.search: a search needs at least one [slo] limit",
    )
    both = scenario_text(search).replace("[load]\n", "[load]\nconcurrency = [1, 2]\n")
    assert problems_of(tmp_path, both) == (
        "load: expected either search or a concurrency or rate list, got both",
    )


def test_a_search_stage_is_sized_at_high(tmp_path: Path) -> None:
    text = scenario_text('{ over = "rate", low = 1, high = 100000 }')
    text = text.replace("requests = 24", "duration_s = 60")
    assert problems_of(tmp_path, text) == (
        "load: expected warmup + rate × duration_s <= 1000000, got 6000004 at rate 100000",
    )


def test_plans_stand_in_for_every_stage_a_search_may_run(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(scenario_text('{ over = "concurrency", low = 1, high = 12 }'), "utf-8")
    plans = search_plans(load_scenario(path, env={}))
    assert [p.concurrency for p in plans] == [1, 12, 12, 12, 12, 12]  # ceil(log2 11) + 2
    assert max(p.max_streams for p in plans) == 12


def test_a_command_line_list_replaces_the_search(tmp_path: Path) -> None:
    from loadbench.cli.search_run import gating_slo, list_over_search

    path = tmp_path / "s.toml"
    path.write_text(scenario_text('{ over = "concurrency", low = 1, high = 12 }'), "utf-8")
    s = load_scenario(path, env={})
    assert gating_slo(s) == ()  # the search looks for [slo]: it gates nothing
    listed = list_over_search(apply_overrides(s, rate=(2.0,)), True)
    assert listed.load.search is None
    assert listed.load.rate == (2.0,)
    assert gating_slo(listed) == listed.slo


# -- the driver and the summary, without a server -------------------------------------------


def fake_stage(value: float, p95: float, *, stopped: str | None = None) -> dict[str, Any]:
    return {
        "model": "m",
        "label": f"c={value}",
        "mode": "concurrency",
        "concurrency": value,
        "rate": None,
        "interrupted": False,
        "stopped": stopped,
        "requests": {"sent": 10, "ok": 10, "failed": 0, "warmup": 0},
        "latency_ms": {"ttft": {"count": 10, "p95": p95}},
    }


def test_a_stage_meets_when_every_limit_passes_and_it_ran_to_its_end() -> None:
    slo = [parse_threshold("ttft.p95<=80ms")]
    assert stage_meets(fake_stage(4, 79.0), slo, None)
    assert not stage_meets(fake_stage(4, 81.0), slo, None)
    assert not stage_meets(fake_stage(4, 79.0, stopped="max_error_rate"), slo, None)
    failing = fake_stage(4, 79.0)
    failing["requests"] = {"sent": 10, "ok": 8, "failed": 2, "warmup": 0}
    assert stage_meets(failing, slo, 0.25)
    assert not stage_meets(failing, slo, 0.1)


def test_the_summary_replays_the_search_from_the_document() -> None:
    spec = SearchSpec(LoadMode.CONCURRENCY, 1, 12, 1)
    p95 = {1: 50.0, 12: 900.0, 6: 300.0, 3: 52.0, 4: 55.0, 5: 120.0}
    doc: dict[str, Any] = {
        "scenario": {
            "slo": ["ttft.p95<=80ms"],
            "load": {"max_error_rate": None, "search": dict(spec.__dict__, over="concurrency")},
        },
        "stages": [fake_stage(v, ms) for v, ms in p95.items()],
    }
    (block,) = search_summary(doc) or []
    assert block["answer"] == 4
    assert block["bracket"] == [4, 5]
    assert block["finished"]
    assert [p["meets"] for p in block["probes"]] == [True, False, False, True, True, False]
    summary = summarize_run(doc)  # no checks given: the search's [slo] judges the points
    assert summary["search"] == [block]
    assert summary["slo"] == ["ttft.p95<=80ms"]
    assert summary["models"][0]["max_load_within_slo"]["load"] == 4
    doc["stages"][-1]["interrupted"] = True
    (cut,) = search_summary(doc) or []
    assert not cut["finished"]
    assert cut["answer"] == 4
    assert cut["bracket"] == [4, 6]
    assert cut["reason"] == "interrupted at c=5: the search did not finish"
    assert search_summary({"scenario": {"load": {}}, "stages": []}) is None


def test_the_console_line() -> None:
    spec = SearchSpec(LoadMode.RATE, 2.0, 18.0, 1.0)
    found = search_block("m", run_search(spec, lambda r: r <= 6.7))
    assert search_line(found) == (
        "m: search: highest rate meeting every SLO: 6/s (bracket 6–7, 6 stages)"
    )
    high = search_block("m", run_search(spec, lambda r: True))
    assert search_line(high) == (
        "m: search: highest rate meeting every SLO: 18/s (bracket 18 and up, 2 stages; "
        "high (18) meets every limit: raise high)"
    )
    none = search_block("m", run_search(spec, lambda r: False))
    assert search_line(none) == (
        "m: search: highest rate meeting every SLO: none (even low (2) fails a limit: "
        "lower low; 1 stage)"
    )


@pytest.mark.anyio
async def test_the_driver_plans_each_probe_and_stops_on_no_result(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(scenario_text('{ over = "concurrency", low = 1, high = 12 }'), "utf-8")
    s = load_scenario(path, env={})
    seen: list[int | None] = []

    async def run_one(plan: Any) -> Any:
        seen.append(plan.concurrency)
        await anyio.lowlevel.checkpoint()
        return None if plan.concurrency == 6 else _Result(plan)

    state = await search_stages(s, "sim-model", run_one, lambda r: r.plan.concurrency <= 4)
    assert seen == [1, 12, 6]
    assert state.halted == "a stage returned no result"
    assert state.answer == 1


class _Result:
    def __init__(self, plan: Any) -> None:
        self.plan, self.stopped = plan, None


# -- a real search of the simulator --------------------------------------------------------


def loadbench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ},
    )


def test_a_search_brackets_the_simulators_slots(tmp_path: Path) -> None:
    """4 slots, TTFT 50 ms once a slot is free: up to c=4 no request waits, from c=5 some
    wait a whole request (~70 ms) for a slot, so TTFT p95 <= 80 ms holds exactly up to 4."""
    scenario = tmp_path / "search.toml"
    scenario.write_text(scenario_text('{ over = "concurrency", low = 1, high = 12 }'), "utf-8")
    out = tmp_path / "r.json"
    proc = loadbench("run", str(scenario), "-o", str(out), "--quiet", timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # failing probes gate nothing
    doc = orjson.loads(out.read_bytes())
    jsonschema.validate(doc, schema())
    (block,) = doc["summary"]["search"]
    assert block["answer"] == 4, block
    assert block["bracket"] == [4, 5]
    assert block["finished"]
    assert [s["concurrency"] for s in doc["stages"]] == [p["value"] for p in block["probes"]]
    assert [p["value"] for p in block["probes"]] == [1, 12, 6, 3, 4, 5]
    # [slo] does not gate a search's exit code, but its limits still count goodput.
    assert all(s["goodput"] is not None for s in doc["stages"])
    assert "sim-model: search: highest concurrency meeting every SLO: 4 (bracket 4–5" in (
        proc.stderr
    )
    report = tmp_path / "report.md"
    proc = loadbench("report", str(out), "-o", str(report), timeout=30)
    assert proc.returncode == 0, proc.stderr
    text = report.read_text(encoding="utf-8")
    assert "### Search" in text
    assert "Highest concurrency meeting every SLO limit: c=4" in text
    # compare and merge read a result with a search like any other
    assert loadbench("compare", str(out), str(out), timeout=30).returncode == 0
    merged, twin = tmp_path / "m.json", tmp_path / "twin.json"
    twin.write_bytes(out.read_bytes())  # a second generator's file
    proc = loadbench("merge", str(out), str(twin), "-o", str(merged), timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(merged.read_bytes())["summary"]["search"][0]["probes"]
