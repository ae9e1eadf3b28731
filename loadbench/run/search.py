"""``[load] search``: the highest load whose stage meets every ``[slo]`` limit, by bisection.

The pure part (:class:`SearchState`, :func:`next_probe`, :func:`record_probe`) decides which load
to try next from the verdicts so far; :func:`search_stages` runs each probe as a real
stage, planned by ``plan_stage`` and run by whatever the caller passes (one process, or
worker processes), so every probe is a stage of the result with its own figures.

The search runs on a grid of indices ``0..n``, so its stage count is exact whatever the
floats do: a concurrency search's grid is every integer from ``low`` to ``high``; a rate
search's is ``2**k`` equal steps with ``k = ceil(log2((high - low) / precision))``, so a
step is at most ``precision`` (up to float rounding). First ``low`` (if it fails, there is
no answer), then ``high`` (if it meets, the answer is ``high``: the search says to raise
it), then the middle of the bracket until the bracket is one step wide (a concurrency
search: ``precision`` wide). At most ``ceil(log2((high - low) / precision)) + 2`` stages.

The verdicts assume a monotone server: a load that meets the limits is taken to mean every
lower one would too. A noisy verdict near the threshold moves the answer by at most the
bracket it landed in; the result keeps every probe and its verdict, so it can be read.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loadbench.run.plan import StagePlan, plan_stage
from loadbench.scenario import LoadMode, Scenario, SearchSpec

if TYPE_CHECKING:
    from loadbench.run.stage import StageResult

__all__ = [
    "Probe",
    "SearchState",
    "max_probes",
    "next_probe",
    "record_probe",
    "replay_search",
    "search_plans",
    "search_stages",
    "start_search",
]

# A stage that ended for this reason ends the search: the model is not serving.
HALTS = {"warmup_failed": "every warm-up request failed: the model is not serving"}


@dataclass(frozen=True)
class Probe:
    value: float  # an int for a concurrency search
    meets: bool


@dataclass(frozen=True)
class SearchState:
    """A search so far: its spec, its grid, the indices known to meet (``lo``) and to fail
    (``hi``), every probe in order, and why it ended early (``halted``), if it did."""

    spec: SearchSpec
    n: int  # the grid's last index: index n is ``high``
    lo: int | None = None
    hi: int | None = None
    probes: tuple[Probe, ...] = ()
    halted: str | None = None

    @property
    def is_concurrency(self) -> bool:
        return self.spec.over is LoadMode.CONCURRENCY

    def value(self, index: int) -> float:
        """The load at grid ``index``: an int for concurrency; ``high`` itself at ``n``."""
        spec = self.spec
        if self.is_concurrency:
            return int(spec.low) + index
        if index >= self.n:
            return spec.high
        return min(spec.low + (spec.high - spec.low) * index / self.n, spec.high)

    @property
    def answer(self) -> float | None:
        """The highest load known to meet every limit; None when none is (yet)."""
        return None if self.lo is None else self.value(self.lo)

    @property
    def bracket(self) -> tuple[float | None, float | None]:
        """(highest load known to meet, lowest known to fail); None where none is known."""
        return (self.answer, None if self.hi is None else self.value(self.hi))

    @property
    def done(self) -> bool:
        return next_probe(self) is None

    @property
    def reason(self) -> str:
        """Why the answer is what it is, in words for the report."""
        spec = self.spec
        if self.halted is not None:
            return self.halted
        if not self.probes:
            return "not run"
        if self.lo is None and self.hi is not None:
            return f"even low ({_show(spec.low)}) fails a limit: lower low"
        if self.hi is None and len(self.probes) >= 2:
            return f"high ({_show(spec.high)}) meets every limit: raise high"
        if self.done:
            return f"the bracket is no wider than the precision ({_show(spec.precision)})"
        return "not finished"


def grid_size(spec: SearchSpec) -> int:
    """The grid's last index (see the module's docstring)."""
    width = spec.high - spec.low
    if spec.over is LoadMode.CONCURRENCY:
        return int(width)
    return 1 << max(0, math.ceil(math.log2(width / spec.precision)))


def start_search(spec: SearchSpec) -> SearchState:
    return SearchState(spec=spec, n=grid_size(spec))


def _next_index(s: SearchState) -> int | None:
    if s.halted is not None:
        return None
    if not s.probes:
        return 0
    if s.lo is None:
        return None  # low failed
    if s.hi is None:
        return s.n if len(s.probes) == 1 else None  # high met
    step = int(s.spec.precision) if s.is_concurrency else 1
    if s.hi - s.lo <= max(1, step):
        return None
    return (s.lo + s.hi) // 2


def next_probe(s: SearchState) -> float | None:
    """The load to run next, or None when the search is over."""
    index = _next_index(s)
    return None if index is None else s.value(index)


def record_probe(s: SearchState, meets: bool, halted: str | None = None) -> SearchState:
    """The state after the probe :func:`next_probe` gave was run and judged; ``halted``
    (why its stage ended the search, e.g. the model stopped serving) ends the search."""
    index = _next_index(s)
    if index is None:
        raise ValueError("the search is over: nothing was due to be probed")
    return SearchState(
        spec=s.spec,
        n=s.n,
        lo=index if meets else s.lo,
        hi=s.hi if meets else index,
        probes=(*s.probes, Probe(s.value(index), meets)),
        halted=halted,
    )


def halt_reason(label: str, stopped: str | None) -> str | None:
    """Why a stage that ``stopped`` this way ends the search, or None when it does not."""
    why = HALTS.get(stopped or "")
    return None if why is None else f"{label}: {why}"


def replay_search(
    spec: SearchSpec, stages: Iterable[tuple[float | None, bool, str, str | None]]
) -> SearchState:
    """The search as a result file's stages tell it: ``(load, meets, label, stopped)`` of
    one model's stages in run order. It stops at a stage that is not the probe due (the
    run was cut short, or the file was not written by a search of this spec)."""
    state = start_search(spec)
    for load, meets, label, stopped in stages:
        due = next_probe(state)
        if due is None or due != load:
            break
        state = record_probe(state, meets, halt_reason(label, stopped))
    return state


def max_probes(spec: SearchSpec) -> int:
    """The most stages a search runs: ``ceil(log2((high - low) / precision)) + 2``."""
    n = grid_size(spec)
    step = int(spec.precision) if spec.over is LoadMode.CONCURRENCY else 1
    return 2 + max(0, math.ceil(math.log2(n / step)))


def search_plans(scenario: Scenario) -> tuple[StagePlan, ...]:
    """Stand-ins for every stage a search may run, per model: ``low``, then ``high`` for
    each of the others (the most load any of them can have; their loads are not known
    yet). What a run sizes its connections, open files and progress count by."""
    spec = scenario.load.search
    if spec is None:
        return ()
    plans: list[StagePlan] = []
    for model in scenario.models:
        high = plan_stage(scenario, model, spec.high)
        plans += [plan_stage(scenario, model, spec.low), *[high] * (max_probes(spec) - 1)]
    return tuple(plans)


async def search_stages(
    scenario: Scenario,
    model: str,
    run_one: Callable[[StagePlan], Awaitable[StageResult | None]],
    verdict: Callable[[StageResult], bool],
) -> SearchState:
    """The search for one model, each probe planned by ``plan_stage`` and run by
    ``run_one`` (None: no stage came back, which ends the search); ``verdict`` says
    whether a finished stage met every limit. A cancellation propagates."""
    spec = scenario.load.search
    if spec is None:
        raise ValueError("the scenario has no [load] search")
    state = start_search(spec)
    while (value := next_probe(state)) is not None:
        result = await run_one(plan_stage(scenario, model, value))
        if result is None:
            return dataclasses.replace(state, halted="a stage returned no result")
        halted = halt_reason(result.plan.label, result.stopped)
        state = record_probe(state, verdict(result), halted)
    return state


def _show(x: float) -> str:
    return f"{x:g}"
