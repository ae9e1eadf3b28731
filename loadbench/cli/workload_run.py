"""A run's ``[workload]``: its files checked before anything starts, then its items made
against each model's server, whose ``/tokenize`` sizes the prompts when it has one.

Two passes on purpose. The first, in ``prepare``, reads every file with the approximate
tokenizer, so a bad dataset or trace exits 2 before a server is launched, and gives the
trace's schedule to the plan. The second, per model once its server answers, picks the
best tokenizer (the server's own, a ``tokenizer.json``, else the approximation) and is the
one the requests are built from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from loadbench.errors import UsageError

if TYPE_CHECKING:
    import httpx

    from loadbench.cli.lineup import ModelRun
    from loadbench.run import WorkPool
    from loadbench.scenario import Scenario

__all__ = ["MISMATCH_WARNING", "check_workload", "length_warnings", "open_pool", "with_speedup"]

# The OSL mismatch share from which a stage gets a warning: its tokens/s and E2E then
# describe shorter answers than the scenario asked for.
MISMATCH_WARNING = 0.05


def with_speedup(scenario: Scenario, speedup: float | None) -> Scenario:
    """``--speedup``: the trace replayed that many times faster (0.5: at half speed)."""
    spec = scenario.workload
    trace = spec.trace if spec is not None else None
    if speedup is None:
        return scenario
    if spec is None or trace is None:
        raise UsageError(
            f"--speedup: expected a scenario with a [workload] trace, {scenario.path} has none"
        )
    if not 0 < speedup <= 1000:
        raise UsageError(f"--speedup: expected a number above 0 and at most 1000, got {speedup:g}")
    trace = dataclasses.replace(trace, speedup=speedup)
    return dataclasses.replace(scenario, workload=dataclasses.replace(spec, trace=trace))


def check_workload(scenario: Scenario, workers: object) -> tuple[int, ...]:
    """The files read and checked (``ScenarioError``: exit 2); a trace's due offsets in ns."""
    spec = scenario.workload
    if spec is None:
        return ()
    if workers is not None:
        raise UsageError(
            f"{scenario.path}: [workload] cannot be split across --workers yet: "
            "run it in one process (leave out --workers and [load] workers)"
        )
    if spec.trace is not None and (scenario.load.rate or scenario.load.concurrency):
        raise UsageError(
            "--rate and --concurrency do not apply to a [workload] trace: its timestamps are "
            "the schedule (use --speedup)"
        )
    from loadbench.scenario import TokenizerChoice
    from loadbench.workload import prepare_workload

    early = spec
    if spec.tokenizer in (TokenizerChoice.AUTO, TokenizerChoice.SERVER):
        early = dataclasses.replace(spec, tokenizer=TokenizerChoice.APPROX)
    workload = prepare_workload(
        early, scenario_path=scenario.path, default_max_tokens=scenario.request.max_tokens
    )
    return workload.due_ns


async def open_pool(
    scenario: Scenario, run: ModelRun, console: Any
) -> tuple[WorkPool | None, httpx.Client | None]:
    """The model's items, sized with the best tokenizer its server offers (None, None
    without a ``[workload]``); the client its ``/tokenize`` is asked through stays open
    until the caller closes it."""
    import anyio.to_thread
    import httpx

    from loadbench.run import WorkPool
    from loadbench.workload import prepare_workload

    spec = scenario.workload
    if spec is None:
        return None, None
    model, base_url = run.served_as or run.name, run.base_url
    headers = {"authorization": f"Bearer {run.api_key}"} if run.api_key else {}
    client = httpx.Client(timeout=scenario.target.timeout_s, trust_env=False, headers=headers)

    def prepare() -> Any:
        return prepare_workload(
            spec,
            scenario_path=scenario.path,
            default_max_tokens=run.request.max_tokens,
            base_url=base_url,
            model=model,
            client=client,
        )

    try:
        workload = await anyio.to_thread.run_sync(prepare)
    except BaseException:
        client.close()  # noqa: ASYNC212  # closing a sync client does no I/O wait
        raise
    style = "yellow" if workload.approximate else None
    note = "approximate lengths: " if workload.approximate else ""
    line = f"{run.name}: workload prompts sized by {note}{workload.tokenizer_note}"
    console.print(line, style=style, highlight=False)
    return WorkPool(workload), client


def length_warnings(stages: Sequence[Any]) -> list[str]:
    """One line per stage whose answers often stopped short of max_tokens, or whose
    lengths are estimates: a server that stops early must not pass for a fast one."""
    out: list[str] = []
    for stage in stages:
        lengths = stage.lengths
        if lengths is None or not lengths.ok:
            continue
        short = lengths.output_short / lengths.ok
        if short >= MISMATCH_WARNING:
            out.append(
                f"{stage.plan.model} {stage.plan.label}: {short:.0%} of answers stopped short of "
                f"max_tokens (OSL mismatch): tokens/s and E2E describe shorter answers than "
                f"asked; set ignore_eos = true in [workload] where the server honours it"
            )
    if any(s.lengths is not None and s.lengths.approximate for s in stages):
        out.append(
            "workload: prompt lengths are approximate (no /tokenize or tokenizer.json): "
            "requested and counted input lengths are estimates"
        )
    return out
