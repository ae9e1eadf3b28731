"""One `loadbench run`, start to result file: the orchestration the command line drives.

It exists so that `cli` stays the command-line layer (options, help, printing, exit codes,
the process's signal handlers) while this module does the run in three steps the CLI
calls in order: `prepare` (scenario, overrides, plans, checks of the output paths),
`measure` (start or reach the target, probe it, run the stages under anyio) and
`write_results` (the result document). It raises loadbench errors and never exits; the
CLI writes the results with Ctrl-C and SIGTERM deferred, between `measure` and the summary.
Heavy modules are imported inside the functions, as in `cli`: start-up to the first request
is a measured figure.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter, perf_counter_ns
from typing import TYPE_CHECKING, Any

from loadbench.cli.search_run import gating_slo, list_over_search
from loadbench.cli.stream_delivery import with_connection_options
from loadbench.cli.target import backend_options, find_server_pid, target, workers_of
from loadbench.cli.workload_run import check_workload, length_warnings, open_pool, with_speedup
from loadbench.errors import UsageError

if TYPE_CHECKING:
    from loadbench.cli.lineup import ModelRun
    from loadbench.run import RunState, StagePlan
    from loadbench.scenario import Scenario
    from loadbench.thresholds import Threshold


@dataclass(frozen=True)
class Prepared:
    """A validated run before any request: ``warnings`` grows as the run goes on."""

    scenario: Scenario
    checks: tuple[Threshold, ...]
    plans: tuple[StagePlan, ...]
    run_limit: float | None
    api_key: str | None
    warnings: list[str]
    catalog: dict[str, Any] = dataclasses.field(default_factory=dict)  # [models_catalog]
    fail_fast: bool = False
    workers: int | str | None = None  # None: the engine runs in this process
    ray: str | None = None  # "auto" or an address: the workers are Ray actors


@dataclass(frozen=True)
class Measured:
    """What the stages aggregated, whether a signal cut them short, the target's facts,
    and each model's status."""

    state: RunState
    interrupted: bool
    started_at: str
    target: dict[str, object]
    models: list[ModelRun] = dataclasses.field(default_factory=list)
    fleet: Any = None  # loadbench.workers.Fleet when the stages ran in workers


def prepare(
    scenario_file: str,
    *,
    base_url: str | None,
    models: tuple[str, ...],
    concurrency: str | None,
    rate: str | None,
    requests: int | None,
    duration_s: float | None,
    thresholds: tuple[str, ...],
    output: Path | None,
    records: Path | None,
    overwrite: bool,
    max_duration_s: float | None,
    capability: str | None = None,
    fail_fast: bool = False,
    connections: str | None = None,
    quickack: bool = False,
    workers: str | None = None,
    ray: str | None = None,
    speedup: float | None = None,
) -> Prepared:
    """Everything that can be checked before the target starts, so bad input costs nothing."""
    from loadbench.scenario import apply_overrides, load_scenario, parse_float_list, parse_int_list
    from loadbench.thresholds import parse_threshold

    scenario = load_scenario(scenario_file)
    scenario = apply_overrides(
        scenario,
        base_url=base_url,
        models=models,
        concurrency=parse_int_list(concurrency, "--concurrency") if concurrency else (),
        rate=parse_float_list(rate, "--rate") if rate else (),
        requests=requests,
        duration_s=duration_s,
    )
    scenario = with_connection_options(scenario, connections, quickack)
    scenario = with_speedup(scenario, speedup)
    scenario = list_over_search(scenario, bool(concurrency or rate))
    checks = (*gating_slo(scenario), *(parse_threshold(t) for t in thresholds))
    from loadbench.cli.lineup import read_catalog_of, with_capability

    catalog = read_catalog_of(scenario)
    if capability is not None:
        scenario = with_capability(scenario, catalog, capability)
    from loadbench.run import plan_stages, search_plans

    count = workers_of(workers, scenario.load.workers)
    plans = plan_stages(scenario, check_workload(scenario, count))
    plans = plans if scenario.load.search is None else search_plans(scenario)
    for path, what in ((output, "the results"), (records, "the records")):
        if path is not None and path.is_dir():
            raise UsageError(f"{path}: is a directory, expected a file name for {what}")
        if path is not None and path.exists() and not overwrite:
            raise UsageError(f"{path}: exists; pass --overwrite to replace it")
    from loadbench.run import ensure_open_files

    ensure_open_files(max(p.max_streams for p in plans))
    run_limit = max_duration_s or scenario.load.max_duration_s
    warnings: list[str] = []
    api_key = None
    key_env = scenario.target.api_key_env
    if key_env:
        api_key = os.environ.get(key_env) or None
        if api_key is None:
            warnings.append(f"environment variable {key_env} is not set: no Authorization header")
    if ray is not None and count is None:
        raise UsageError("--ray needs --workers N (or [load] workers): how many actors to start")
    if count is not None and records is not None:
        raise UsageError("--records cannot be used with --workers: records stay in each worker")
    return Prepared(
        scenario, checks, plans, run_limit, api_key, warnings, catalog, fail_fast, count, ray
    )


def measure(
    prepared: Prepared,
    *,
    started: float,
    server_pid: int | None,
    transport: str,
    insecure: bool,
    records: Path | None,
    console: Any,
    quiet: bool,
) -> Measured:
    """Start or reach the target, check it answers, and run every stage against it.

    ``started`` is the CLI's ``perf_counter()`` at entry, for
    ``target.startup_to_first_request_s``. A Ctrl-C or SIGTERM during the stages ends them
    and comes back as ``interrupted``; one before the stages propagates as KeyboardInterrupt.
    """
    import anyio

    from loadbench.cli.lineup import plan_lineup, resolve_lineup
    from loadbench.thresholds import slo_request_limits

    scenario, warnings = prepared.scenario, prepared.warnings

    def say(text: str, style: str | None) -> None:
        console.print(text, style=style, highlight=False)

    with target(scenario) as (url, target_info):
        before = len(warnings)
        runs = plan_lineup(scenario, url, prepared.api_key, warnings)
        for w in warnings[before:]:
            say(f"warning: {w}", "yellow")
        timeout = scenario.target.timeout_s
        anyio.run(resolve_lineup, runs, prepared.catalog, timeout, warnings, say)
        for r in runs:
            if r.status != "ok":
                say(f"{r.name}: {r.status}: {r.reason}", "yellow")
        pid = find_server_pid(url, server_pid, target_info)
        target_info["server_pid"] = pid
        target_info["startup_to_first_request_s"] = round(perf_counter() - started, 3)
        fleet = None
        if prepared.workers is not None:
            from loadbench.workers import Fleet, auto_workers

            fleet = Fleet()
            count = prepared.workers
            if count == "auto":
                import httpx

                local = bool(target_info.get("simulated")) or "launched" in target_info
                local = local or httpx.URL(url).host in ("127.0.0.1", "localhost", "::1")
                count = auto_workers(local_server=local)
            fleet.count = int(count)
        state, interrupted, started_at = _execute(
            scenario,
            prepared.plans,
            url,
            prepared.api_key,
            transport,
            not insecure,
            console,
            quiet,
            pid,
            # Goodput counts [slo]'s limits in a search too, where they do not gate.
            slo_request_limits((*prepared.checks, *(scenario.slo if scenario.load.search else ()))),
            prepared.run_limit,
            records,
            target_info.get("cold_start"),
            runs,
            prepared.fail_fast,
            fleet,
            prepared.ray,
        )
    return Measured(state, interrupted, started_at, target_info, runs, fleet)


def _execute(
    scenario: Any,
    plans: Any,
    url: str,
    api_key: str | None,
    transport: str,
    verify: bool,
    console: Any,
    quiet: bool,
    server_pid: int | None,
    slo: Any = (),
    run_limit: float | None = None,
    records: Path | None = None,
    cold_start: Any = None,
    runs: Any = (),
    fail_fast: bool = False,
    fleet: Any = None,
    ray: str | None = None,
) -> tuple[Any, bool, str]:
    """The stages, model by model: each model on its own target, its samples first when
    asked for, its later stages dropped once it fails; ``fail_fast`` stops at the first
    model skipped or failed."""
    import anyio

    from loadbench.cli.lineup import (
        OK,
        SKIPPED,
        cold_figures,
        first_request,
        key_for,
        sample_and_score,
        samples_wanted,
        status_after,
    )
    from loadbench.http import LoadClient
    from loadbench.observe import MetricsScraper, ServerMonitor, default_metrics_url
    from loadbench.run import Reporter, RunState, run_stages

    state = RunState() if fleet is None else fleet.state
    server = ServerMonitor(server_pid, interval_s=scenario.monitor.interval_s)
    reporter = Reporter(console, len(plans), quiet=quiet)
    stopped_by_signal = False

    async def watch_sigterm(cancel: Callable[[], None]) -> None:
        nonlocal stopped_by_signal
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                stopped_by_signal = True
                cancel()
                return

    async def metrics_scraper() -> MetricsScraper | None:
        """The server's /metrics, when it answers with an LLM server's families."""
        scraper = MetricsScraper(scenario.target.metrics_url or default_metrics_url(url))
        if await scraper.read():
            return scraper
        await scraper.aclose()
        return None

    async def main_task() -> None:
        scraper = await metrics_scraper()
        try:
            await load(scraper)
        finally:
            if scraper is not None:
                await scraper.aclose()

    judge_env = scenario.quality.judge_api_key_env if scenario.quality is not None else None
    judge_key = key_for(judge_env, api_key, [])
    sampling = samples_wanted(scenario)

    async def one_model(run: Any, scraper: MetricsScraper | None) -> None:
        model_plans = [p for p in plans if p.model == run.name]
        async with LoadClient(
            base_url=run.base_url,
            api=scenario.target.api,
            spec=run.request,
            timeout_s=scenario.target.timeout_s,
            max_connections=max((p.max_streams for p in model_plans), default=1),
            api_key=run.api_key,
            verify=verify,
            transport=transport,
            connections=scenario.target.connections,
            quickack=scenario.target.quickack,
        ) as client:
            if isinstance(cold_start, dict) and "first_request" not in cold_start:
                first = await first_request(client, run.served_as, (*scenario.prompts, "Hi.")[0])
                cold_start.update(cold_figures(cold_start, first))
            if sampling:
                await sample_and_score(run, scenario, url, api_key, judge_key)
            before = len(state.stages)
            pool, tokenize = await open_pool(scenario, run, console)

            async def run_plans(plans: list[Any]) -> None:
                if fleet is not None:
                    from loadbench.workers import run_stages_in_workers

                    await run_stages_in_workers(
                        scenario,
                        plans,
                        run.base_url,
                        fleet,
                        workers=fleet.count,
                        api_key=run.api_key,
                        verify=verify,
                        transport=transport,
                        slo=slo,
                        on_stage_end=reporter.stage_done,
                        server=server,
                        request=run.request,
                        served_as=run.served_as,
                        ray=ray,
                    )
                else:
                    await run_stages(
                        plans,
                        scenario.prompts,
                        client,
                        state,
                        reporter.stage_done,
                        server,
                        slo,
                        scenario.load.max_error_rate,
                        writer,
                        scraper,
                        run.served_as,
                        pool,
                    )

            judged = None  # a search: the stages that say whether the model failed
            try:
                if scenario.load.search is None:
                    await run_plans(model_plans)
                else:
                    from loadbench.cli.search_run import search_model

                    judged = await search_model(scenario, run.name, run_plans, state, console)
            finally:
                state.stale_reuses += client.stale_reuses
                if tokenize is not None:
                    tokenize.close()
            status_after(run, state.stages[before:] if judged is None else judged)
        if run.status != OK:
            console.print(f"{run.name}: {run.status}: {run.reason}", style="yellow")

    async def load(scraper: MetricsScraper | None) -> None:
        async with anyio.create_task_group() as tg:
            if sys.platform != "win32":
                tg.start_soon(watch_sigterm, tg.cancel_scope.cancel)
            tg.start_soon(reporter.watch, state)
            stop: str | None = None
            with anyio.move_on_after(math.inf if run_limit is None else run_limit) as limit:
                for run in runs:
                    if stop is None and run.status == OK:
                        await one_model(run, scraper)
                    elif stop is not None:
                        run.fail(SKIPPED, f"not run: {stop}")
                    if fail_fast and stop is None and run.status != OK:
                        stop = f"--fail-fast after {run.name} was {run.status}"
            if limit.cancelled_caught:
                (state if fleet is None else fleet).close_partial(stopped="max_duration_s")
                for run in runs:
                    if run.status == OK and not any(s.plan.model == run.name for s in state.stages):
                        run.fail(SKIPPED, "not run: the run reached max_duration_s")
            tg.cancel_scope.cancel()

    from loadbench.results import RecordWriter

    writer = RecordWriter(records, perf_counter_ns()) if records is not None else None
    started_at = _now_iso()
    interrupted = False
    try:
        anyio.run(main_task, backend_options=backend_options())
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if writer is not None:
            writer.close()
    if stopped_by_signal:
        interrupted = True
    if interrupted:
        state.close_partial()
    return state, interrupted, started_at


def write_results(
    prepared: Prepared, measured: Measured, output: Path | None, insecure: bool
) -> tuple[Path, dict[str, Any]]:
    """Build the result document (with its summary) and write it; returns where, and it."""
    finished_at = _now_iso()
    from loadbench.results import build_document, default_path, dumps, write_atomic

    scenario, state, target_info = prepared.scenario, measured.state, measured.target
    warnings = prepared.warnings
    target_info["insecure"] = insecure
    # Not retries of requests the server saw: see transport.LeanTransport._no_reuse.
    target_info["stale_keepalive_resends"] = state.stale_reuses
    for s in state.stages:
        if s.client.warning:
            warnings.append(f"{s.plan.model} {s.plan.label}: {s.client.warning}")
    warnings.extend(length_warnings(state.stages))
    if measured.fleet is not None:
        warnings.extend(measured.fleet.warnings)
    document = build_document(
        scenario,
        state.stages,
        started_at=measured.started_at,
        finished_at=finished_at,
        interrupted=measured.interrupted,
        target=target_info,
        warnings=warnings,
    )
    if measured.models:
        from loadbench.cli.lineup import model_blocks

        document["models"] = model_blocks(measured.models, document["stages"], scenario.cost)
    from loadbench.results import summarize_run

    if measured.fleet is not None:
        document["workers"] = measured.fleet.to_dict()
    document["summary"] = summarize_run(document, prepared.checks)
    path = output or default_path(scenario.name, datetime.now(UTC))
    write_atomic(path, dumps(document))
    return path, document


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
