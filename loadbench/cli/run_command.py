"""``loadbench run``: prepare, measure, then write the result, the summary and a report."""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

import click

from loadbench.cli.app import (
    EXIT_INTERRUPTED,
    EXIT_THRESHOLD,
    _interrupts_deferred,
    _raise_interrupt,
)
from loadbench.cli.file_commands import write_report

if TYPE_CHECKING:
    from loadbench.cli.runner import Measured, Prepared


def _summary_lines(summary: dict[str, Any], models: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """The knee, saturation and SLO verdicts per model; a model that was skipped or failed
    gets its status and reason instead, since its few stages have no knee to find."""
    status = {str(m["name"]): m for m in models}
    lines = []
    for m in summary["models"]:
        block = status.get(str(m["model"]))
        if block is not None and block["status"] != "ok":
            lines.append(f"{m['model']}: {block['status']}: {block['reason'] or '-'}")
            continue
        knee, saturation = m["knee"], m.get("saturation")
        if saturation and (knee is None or knee["label"] != saturation["label"]):
            lines.append(
                f"{m['model']}: throughput saturates at {saturation['label']} "
                f"({saturation['reason']})"
            )
        if knee:
            lines.append(f"{m['model']}: knee at {knee['label']} ({knee['reason']})")
        elif saturation:
            lines.append(
                f"{m['model']}: no queueing knee within the tested range "
                f"(latency grows in proportion to the load)"
            )
        else:
            lines.append(f"{m['model']}: no knee within the tested range")
        best = m["max_load_within_slo"]
        if summary["slo"]:
            lines.append(
                f"{m['model']}: highest load within SLO: {best['label']}"
                if best
                else f"{m['model']}: no stage met the SLO"
            )
        for p in m["points"]:
            note = p["littles_law"].get("note")
            if note:
                lines.append(f"{m['model']} {p['label']}: {note}")
    return lines


@click.command()
@click.argument("scenario_file", metavar="SCENARIO")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Result file to write (default: results/<name>-<UTC time>.json).",
)
@click.option(
    "--base-url", help="Target URL, e.g. http://127.0.0.1:8000/v1 (beats the file and env)."
)
@click.option("--model", "models", multiple=True, help="Model to test; repeat for several.")
@click.option("--concurrency", help="Closed-loop stages, e.g. 1,4,16.")
@click.option("--rate", help="Open-loop stages in requests/s, e.g. 2,8.")
@click.option("--requests", type=int, help="Measured requests per stage.")
@click.option(
    "--speedup", type=float, help="Replay the [workload] trace this many times faster (2: 2x)."
)
@click.option("--duration-s", type=float, help="Measured seconds per stage instead of a count.")
@click.option(
    "--transport",
    type=click.Choice(["auto", "lean", "httpx"]),
    default="auto",
    show_default=True,
    help="HTTP transport: lean HTTP/1.1 (with TLS for https://) unless httpx's own is asked for.",
)
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates.")
@click.option(
    "--connections",
    type=click.Choice(["reuse", "fresh"]),
    help="reuse: keep connections alive, as SDKs do (default); fresh: a new one per request.",
)
@click.option(
    "--quickack",
    is_flag=True,
    help="Linux: ACK at once (TCP_QUICKACK), so a server's Nagle cannot wait on our ACK.",
)
@click.option(
    "--server-pid",
    type=int,
    help="Sample this process's CPU, memory and GPU use (default: found for loopback).",
)
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    metavar="EXPR",
    help="Fail (exit 1) when a stage breaks it, e.g. 'ttft.p95<500ms', 'error_rate<1%'.",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write benchmark_report.md and PNG plots into this folder.",
)
@click.option(
    "--records",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also stream every request's record to this JSON Lines file.",
)
@click.option(
    "--max-duration-s",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop the whole run after this long (beats [load] max_duration_s).",
)
@click.option(
    "--capability",
    metavar="NAME",
    help="Run only the models that have this capability (inline or in the catalog).",
)
@click.option(
    "--fail-fast",
    is_flag=True,
    help="Stop at the first model skipped or failed, instead of going on with the next.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing result file.")
@click.option(
    "--workers",
    metavar="N|auto",
    help="Split each stage over N worker processes (auto: one per core, less one for a "
    "server on this machine); beats [load] workers.",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="auto|ADDRESS",
    help="Run the workers as Ray actors: auto (RAY_ADDRESS, else a local Ray) or a cluster "
    "address; needs the [ray] extra.",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Exit 0 even when a worker was lost (the result is marked degraded and says which).",
)
@click.option("-q", "--quiet", is_flag=True, help="No live progress; the summary only.")
def run(
    scenario_file: str,
    output: Path | None,
    base_url: str | None,
    models: tuple[str, ...],
    concurrency: str | None,
    rate: str | None,
    requests: int | None,
    speedup: float | None,
    duration_s: float | None,
    transport: str,
    insecure: bool,
    connections: str | None,
    quickack: bool,
    server_pid: int | None,
    thresholds: tuple[str, ...],
    report_dir: Path | None,
    records: Path | None,
    max_duration_s: float | None,
    capability: str | None,
    fail_fast: bool,
    overwrite: bool,
    workers: str | None,
    ray_address: str | None,
    allow_partial: bool,
    quiet: bool,
) -> None:
    """Run SCENARIO (a TOML file) and write a result file and a summary.

    Exits 1 when a stage breaks a threshold (from --threshold or the scenario's [slo]),
    or when every model was skipped or failed, after the results are written.
    """
    started = perf_counter()
    from loadbench.cli.runner import measure, prepare

    prepared = prepare(
        scenario_file,
        base_url=base_url,
        models=models,
        concurrency=concurrency,
        rate=rate,
        requests=requests,
        duration_s=duration_s,
        thresholds=thresholds,
        output=output,
        records=records,
        overwrite=overwrite,
        max_duration_s=max_duration_s,
        capability=capability,
        fail_fast=fail_fast,
        connections=connections,
        quickack=quickack,
        workers=workers,
        ray=ray_address,
        speedup=speedup,
    )
    from loadbench.run import console as make_console

    console = make_console(stderr=True)
    for w in prepared.warnings:
        console.print(f"warning: {w}", style="yellow")
    if sys.platform != "win32":  # SIGTERM before the engine runs: stop like Ctrl-C
        signal.signal(signal.SIGTERM, _raise_interrupt)
    measured = measure(
        prepared,
        started=started,
        server_pid=server_pid,
        transport=transport,
        insecure=insecure,
        records=records,
        console=console,
        quiet=quiet,
    )
    with _interrupts_deferred() as caught:
        _finish(prepared, measured, output, report_dir, insecure, console, caught, allow_partial)


def _finish(
    prepared: Prepared,
    measured: Measured,
    output: Path | None,
    report_dir: Path | None,
    insecure: bool,
    console: Any,
    caught: list[int],
    allow_partial: bool = False,
) -> None:
    """Write the result file (and report), print the summary, and pick the exit code."""
    from loadbench.cli.runner import write_results

    path, document = write_results(prepared, measured, output, insecure)
    from loadbench.run import console as make_console
    from loadbench.run import summary_table
    from loadbench.thresholds import evaluate

    state, target_info, checks = measured.state, measured.target, prepared.checks
    out = make_console(stderr=False)
    models = document.get("models", [])
    if state.stages or any(m["status"] != "ok" for m in models):
        out.print(summary_table(state.stages, models))
    for line in _summary_lines(document["summary"], models):
        out.print(line)
    from loadbench.cli.stream_delivery import delivery_warnings

    for line in delivery_warnings(document):
        console.print(f"warning: {line}", style="yellow", highlight=False)
    from loadbench.cli.workload_run import length_warnings

    for line in length_warnings(state.stages):
        console.print(f"warning: {line}", style="yellow", highlight=False, markup=False)
    from loadbench.observe import cold_start_text

    if (cold := cold_start_text(target_info)) is not None:
        out.print(cold)
    out.print(f"results: {path}")
    if report_dir is not None:
        md = report_dir / "benchmark_report.md"
        pngs = write_report([(path.stem, document)], md, "md", report_dir)
        for written in [md, *pngs]:
            out.print(f"report: {written}")
    if measured.interrupted or caught:
        console.print("interrupted: partial results written", style="yellow")
        sys.exit(EXIT_INTERRUPTED)
    fleet = measured.fleet
    if fleet is not None and fleet.degraded:
        for w in fleet.warnings:
            console.print(f"warning: {w}", style="yellow", highlight=False)
        if not allow_partial:
            console.print("degraded: a worker was lost (--allow-partial accepts it)", style="red")
            sys.exit(fleet.exit_code(allow_partial=False))
    if models and not any(m["status"] == "ok" for m in models):
        console.print("every model was skipped or failed", style="red")
        sys.exit(EXIT_THRESHOLD)
    if prepared.fail_fast and any(m["status"] != "ok" for m in models):
        console.print("--fail-fast: a model was skipped or failed", style="red")
        sys.exit(EXIT_THRESHOLD)
    broken = [
        (label, r)
        for label, results in evaluate(checks, document["stages"])
        for r in results
        if not r.passed
    ]
    if broken:
        for label, r in broken:
            console.print(f"threshold broken: {label}: {r.describe()}", style="red")
        sys.exit(EXIT_THRESHOLD)
