"""A ``[load] search`` inside one run: the runner's glue between the pure bisection
(``run.search``), the stages it already knows how to run, and the verdict of ``results``.

The runner hands over ``run_plans``, the very call that runs a model's list of stages (in
this process or in worker processes), and the search calls it with one plan at a time, so
a probe is measured exactly like any other stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadbench.run import RunState, StagePlan, StageResult
    from loadbench.scenario import Scenario
    from loadbench.thresholds import Threshold


def list_over_search(scenario: Scenario, listed: bool) -> Scenario:
    """A ``--concurrency`` or ``--rate`` list replaces the file's search, as it replaces
    the file's list: the command line is laid on top."""
    if scenario.load.search is None or not listed:
        return scenario
    return dataclasses.replace(scenario, load=dataclasses.replace(scenario.load, search=None))


def gating_slo(scenario: Scenario) -> tuple[Threshold, ...]:
    """The ``[slo]`` limits that gate the run's exit code: none with a search, which looks
    for them (its stages above the answer fail them by design); ``--threshold`` still
    gates. The summary judges every stage against them all the same."""
    return scenario.slo if scenario.load.search is None else ()


async def search_model(
    scenario: Scenario,
    model: str,
    run_plans: Callable[[list[StagePlan]], Awaitable[None]],
    state: RunState,
    console: Any,
) -> list[StageResult]:
    """One model's search, its line printed; returns the stages that say whether the model
    failed (a probe over ``max_error_rate`` is a load that fails, not a failed model)."""
    from loadbench.results import search_block, search_line, stage_verdict
    from loadbench.run import search_stages

    before = len(state.stages)

    async def run_one(plan: StagePlan) -> StageResult | None:
        count = len(state.stages)
        await run_plans([plan])
        return state.stages[-1] if len(state.stages) > count else None

    def verdict(result: StageResult) -> bool:
        return stage_verdict(result, scenario.slo, scenario.load.max_error_rate)

    found = await search_stages(scenario, model, run_one, verdict)
    console.print(search_line(search_block(model, found)), highlight=False)
    return _judged(state.stages[before:])


def _judged(stages: Sequence[StageResult]) -> list[StageResult]:
    return [s for s in stages if s.stopped != "max_error_rate"]
