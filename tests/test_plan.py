"""The plan: stage order, due times and prompt order, by value and by property."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import random
import statistics
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loadbench.run.plan
from loadbench.run.plan import StagePlan, arrival_offsets_ns, plan_stages
from loadbench.scenario.model import Api, Arrival, LoadMode, LoadSpec, RequestSpec, Scenario, Target

NS = 1_000_000_000


def scenario(
    *,
    models: tuple[str, ...] = ("m",),
    prompts: int = 3,
    mode: LoadMode = LoadMode.CONCURRENCY,
    concurrency: tuple[int, ...] = (1,),
    rate: tuple[float, ...] = (),
    arrival: Arrival = Arrival.CONSTANT,
    burstiness: float = 1.0,
    max_concurrency: int | None = None,
    requests: int | None = 10,
    duration_s: float | None = None,
    warmup: int = 0,
    seed: int = 0,
) -> Scenario:
    return Scenario(
        name="t",
        path="t.toml",
        target=Target("http://127.0.0.1:1/v1", Api.CHAT, None, 10.0, None),
        models=models,
        prompts=tuple(f"p{i}" for i in range(prompts)),
        prompts_file=None,
        request=RequestSpec(16, None, True, {}),
        load=LoadSpec(
            mode=mode,
            concurrency=concurrency if mode is LoadMode.CONCURRENCY else (),
            rate=rate if mode is LoadMode.RATE else (),
            arrival=arrival,
            burstiness=burstiness,
            max_concurrency=max_concurrency,
            requests=requests,
            duration_s=duration_s,
            warmup=warmup,
            seed=seed,
        ),
    )


def gaps(offsets: tuple[int, ...]) -> list[float]:
    return [(b - a) / NS for a, b in itertools.pairwise(offsets)]


# -- arrival schedules ----------------------------------------------------------------------


def test_constant_offsets_are_exact() -> None:
    rng = random.Random(0)
    assert arrival_offsets_ns(5, 2.0, Arrival.CONSTANT, 1.0, rng) == (
        0,
        500_000_000,
        1_000_000_000,
        1_500_000_000,
        2_000_000_000,
    )
    thirds = arrival_offsets_ns(4, 3.0, Arrival.CONSTANT, 1.0, rng)
    assert thirds == (0, 333_333_333, 666_666_667, 1_000_000_000)
    far = arrival_offsets_ns(300_001, 3.0, Arrival.CONSTANT, 1.0, rng)
    assert far[-1] == 100_000 * NS  # computed from i, so no drift from summing


def test_zero_arrivals() -> None:
    assert arrival_offsets_ns(0, 1.0, Arrival.POISSON, 1.0, random.Random(0)) == ()


@pytest.mark.parametrize("arrival", [Arrival.POISSON, Arrival.GAMMA])
def test_random_schedules_are_deterministic_per_seed(arrival: Arrival) -> None:
    def draw(seed: str) -> tuple[int, ...]:
        return arrival_offsets_ns(200, 4.0, arrival, 0.5, random.Random(seed))

    assert draw("a") == draw("a")
    assert draw("a") != draw("b")
    assert draw("a")[0] == 0


@pytest.mark.parametrize(
    ("arrival", "burstiness"),
    [(Arrival.POISSON, 1.0), (Arrival.GAMMA, 1.0), (Arrival.GAMMA, 0.25), (Arrival.GAMMA, 4.0)],
)
def test_mean_rate_holds_for_large_n(arrival: Arrival, burstiness: float) -> None:
    n, rate = 20_000, 8.0
    offsets = arrival_offsets_ns(n, rate, arrival, burstiness, random.Random(11))
    achieved = (n - 1) / (offsets[-1] / NS)
    assert achieved == pytest.approx(rate, rel=0.05)


@pytest.mark.parametrize(("burstiness", "cv"), [(1.0, 1.0), (0.25, 2.0), (4.0, 0.5)])
def test_gamma_burstiness_sets_the_gap_cv(burstiness: float, cv: float) -> None:
    offsets = arrival_offsets_ns(20_000, 10.0, Arrival.GAMMA, burstiness, random.Random(3))
    g = gaps(offsets)
    assert statistics.stdev(g) / statistics.mean(g) == pytest.approx(cv, rel=0.1)


def test_poisson_gaps_have_cv_one() -> None:
    g = gaps(arrival_offsets_ns(20_000, 10.0, Arrival.POISSON, 1.0, random.Random(5)))
    assert statistics.stdev(g) / statistics.mean(g) == pytest.approx(1.0, rel=0.1)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        arrival_offsets_ns(3, 0.0, Arrival.CONSTANT, 1.0, random.Random(0))


# -- stages -------------------------------------------------------------------------------------


def test_stages_go_models_outer_loads_inner() -> None:
    plans = plan_stages(scenario(models=("a", "b"), concurrency=(1, 4, 16)))
    assert [(p.model, p.label) for p in plans] == [
        ("a", "c=1"),
        ("a", "c=4"),
        ("a", "c=16"),
        ("b", "c=1"),
        ("b", "c=4"),
        ("b", "c=16"),
    ]
    assert all(p.mode is LoadMode.CONCURRENCY and p.rate is None for p in plans)
    assert all(p.offsets_ns == () and p.max_concurrency is None for p in plans)


def test_labels() -> None:
    plans = plan_stages(scenario(mode=LoadMode.RATE, rate=(2.0, 0.5, 12.5)))
    assert [p.label for p in plans] == ["rate=2/s", "rate=0.5/s", "rate=12.5/s"]
    assert [p.rate for p in plans] == [2.0, 0.5, 12.5]
    assert all(p.concurrency is None for p in plans)


def test_closed_loop_count_covers_warmup_and_requests() -> None:
    (plan,) = plan_stages(scenario(prompts=4, requests=10, warmup=3))
    assert (plan.warmup, plan.requests, plan.duration_s) == (3, 10, None)
    assert len(plan.prompt_order) == 13
    # whole shuffled rounds: every prompt once before any repeats
    assert sorted(plan.prompt_order[:4]) == sorted(plan.prompt_order[4:8]) == [0, 1, 2, 3]


def test_closed_loop_duration_gets_one_round_of_prompts() -> None:
    (plan,) = plan_stages(scenario(prompts=5, requests=None, duration_s=3.0, warmup=2))
    assert plan.requests is None
    assert plan.duration_s == 3.0
    assert sorted(plan.prompt_order) == [0, 1, 2, 3, 4]


def test_open_loop_count_bounded_includes_warmup_at_the_head() -> None:
    s = scenario(mode=LoadMode.RATE, rate=(4.0,), requests=8, warmup=2, max_concurrency=5)
    (plan,) = plan_stages(s)
    assert plan.offsets_ns == tuple(i * 250_000_000 for i in range(10))
    assert len(plan.prompt_order) == 10
    assert plan.max_concurrency == 5


def test_open_loop_duration_constant_is_exact() -> None:
    s = scenario(mode=LoadMode.RATE, rate=(2.0,), requests=None, duration_s=10.0, warmup=2)
    (plan,) = plan_stages(s)
    # warmup at 0 and 0.5 s; the measured window is [1 s, 11 s): 20 arrivals
    assert len(plan.offsets_ns) == 22
    assert plan.offsets_ns[2] == NS
    assert plan.offsets_ns[-1] == 10_500_000_000
    assert len(plan.prompt_order) == 22


@pytest.mark.parametrize("arrival", list(Arrival))
def test_open_loop_duration_offsets_stay_inside_the_window(arrival: Arrival) -> None:
    s = scenario(
        mode=LoadMode.RATE,
        rate=(5.0, 50.0),
        arrival=arrival,
        burstiness=0.5 if arrival is Arrival.GAMMA else 1.0,
        requests=None,
        duration_s=4.0,
        warmup=3,
        seed=9,
    )
    for plan in plan_stages(s):
        assert plan.rate is not None
        span = plan.offsets_ns[plan.warmup]  # the first measured arrival opens the window
        assert all(o < span + 4 * NS for o in plan.offsets_ns)
        measured = len(plan.offsets_ns) - plan.warmup
        if arrival is Arrival.CONSTANT:  # every 1/rate from the window's start: exact
            assert measured == round(plan.rate * 4)
        else:  # seeded draws; the count is Poisson-like around rate x 4 s
            assert measured == pytest.approx(plan.rate * 4, rel=0.5)


def test_stages_are_reproducible_alone() -> None:
    """A stage rerun by itself (``--rate 5``) gets the schedule it had inside the sweep."""
    base = dict(mode=LoadMode.RATE, arrival=Arrival.POISSON, requests=50, warmup=2, seed=4)
    sweep = plan_stages(scenario(rate=(2.0, 5.0), **base))  # type: ignore[arg-type]
    alone = plan_stages(scenario(rate=(5.0,), **base))  # type: ignore[arg-type]
    assert sweep[1] == alone[0]
    other_seed = plan_stages(scenario(rate=(5.0,), **{**base, "seed": 5}))  # type: ignore[arg-type]
    assert other_seed[0].offsets_ns != alone[0].offsets_ns


def test_every_model_sees_the_same_schedule() -> None:
    s = scenario(models=("a", "b"), mode=LoadMode.RATE, rate=(3.0,), arrival=Arrival.POISSON)
    a, b = plan_stages(s)
    assert a.offsets_ns == b.offsets_ns
    assert a.prompt_order == b.prompt_order
    assert dataclasses.replace(a, model="b") == b


def test_plan_module_is_pure() -> None:
    tree = ast.parse(Path(loadbench.run.plan.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert imported <= {
        "__future__",
        "collections",
        "dataclasses",
        "itertools",
        "math",
        "random",
        "loadbench",
    }


# -- properties -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 300),
    rate=st.floats(0.001, 1e6),
    arrival=st.sampled_from(Arrival),
    burstiness=st.floats(0.01, 100.0),
    seed=st.integers(),
)
def test_offsets_never_go_back(
    n: int, rate: float, arrival: Arrival, burstiness: float, seed: int
) -> None:
    offsets = arrival_offsets_ns(n, rate, arrival, burstiness, random.Random(seed))
    assert len(offsets) == n
    assert all(isinstance(o, int) and o >= 0 for o in offsets)
    assert all(a <= b for a, b in itertools.pairwise(offsets))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    mode = draw(st.sampled_from(LoadMode))
    arrival = draw(st.sampled_from(Arrival))
    counted = draw(st.booleans())
    return scenario(
        models=tuple(draw(st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=3))),
        prompts=draw(st.integers(1, 7)),
        mode=mode,
        concurrency=tuple(draw(st.lists(st.integers(1, 64), min_size=1, max_size=3))),
        rate=tuple(draw(st.lists(st.floats(0.5, 200.0), min_size=1, max_size=3))),
        arrival=arrival,
        burstiness=draw(st.floats(0.05, 20.0)) if arrival is Arrival.GAMMA else 1.0,
        requests=draw(st.integers(1, 200)) if counted else None,
        duration_s=None if counted else draw(st.floats(0.01, 2.0)),
        warmup=draw(st.integers(0, 5)),
        seed=draw(st.integers(-(2**63), 2**63 - 1)),
    )


@settings(max_examples=150, deadline=None)
@given(s=scenarios())
def test_plans_hold_together(s: Scenario) -> None:
    plans = plan_stages(s)
    values = s.load.rate if s.load.mode is LoadMode.RATE else s.load.concurrency
    assert len(plans) == len(s.models) * len(values)
    for plan in plans:
        assert isinstance(plan, StagePlan)
        assert plan.warmup == s.load.warmup
        assert plan.prompt_order
        assert all(0 <= i < len(s.prompts) for i in plan.prompt_order)
        assert all(a <= b for a, b in zip(plan.offsets_ns, plan.offsets_ns[1:], strict=False))
        if plan.mode is LoadMode.CONCURRENCY:
            assert plan.offsets_ns == ()
        if s.load.requests is not None:
            assert len(plan.prompt_order) == s.load.warmup + s.load.requests
            if plan.mode is LoadMode.RATE:
                assert len(plan.offsets_ns) == s.load.warmup + s.load.requests
        elif plan.mode is LoadMode.RATE:
            assert s.load.duration_s is not None
            assert len(plan.offsets_ns) >= plan.warmup
            assert len(plan.prompt_order) == len(plan.offsets_ns)
            if len(plan.offsets_ns) > plan.warmup:
                end = plan.offsets_ns[plan.warmup] + round(s.load.duration_s * 1e9)
                assert all(o < end for o in plan.offsets_ns)
    assert plan_stages(s) == plans  # deterministic
