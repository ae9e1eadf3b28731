"""The command line: the one synchronous entry point, and the one place errors are caught.

Exit codes:
    0    done
    1    a stage broke a threshold or SLO, or a comparison found a regression
    2    bad input: a scenario, an option, a file
    3    the target did not answer before the first stage
    130  interrupted (Ctrl-C, SIGTERM) after the partial results were written
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, NoReturn

import click

from loadbench import __version__
from loadbench.errors import LoadbenchError, UsageError

if TYPE_CHECKING:
    from loadbench.runner import Measured, Prepared

EXIT_OK = 0
EXIT_THRESHOLD = 1
EXIT_INTERRUPTED = 130


def _fail(exc: LoadbenchError) -> NoReturn:
    for line in exc.message.splitlines() or [type(exc).__name__]:
        click.echo(f"Error: {line}", err=True)
    sys.exit(exc.exit_code)


class _Group(click.Group):
    """Turns every LoadbenchError into ``Error: …`` on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LoadbenchError as exc:
            _fail(exc)
        except KeyboardInterrupt:  # before any request went out: nothing to keep
            click.echo("interrupted before the first request: no results written", err=True)
            sys.exit(EXIT_INTERRUPTED)


def _stop_signals() -> list[signal.Signals]:
    return [signal.SIGINT] if sys.platform == "win32" else [signal.SIGINT, signal.SIGTERM]


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[list[int]]:
    """While results are written, a Ctrl-C or SIGTERM is noted, not obeyed: the file is
    short work, and losing it to a second keypress would lose the run."""
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda n, _f: caught.append(n)) for s in _stop_signals()}
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="loadbench")
def main() -> None:
    """Load-test OpenAI-compatible LLM servers: streaming requests from a scenario file,
    exact latency percentiles (HDR histograms), honest about coordinated omission and about
    its own CPU."""


def _summary_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for m in summary["models"]:
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


def _write_report(
    runs: list[tuple[str, dict[str, Any]]], path: Path, fmt: str, plot_dir: Path | None
) -> list[Path]:
    """Plots first (an HTML report embeds them), then the report; returns the PNGs."""
    from loadbench import report
    from loadbench.results import write_atomic

    pngs: list[Path] = []
    if plot_dir is not None:
        from loadbench.plots import plot_files

        pngs = plot_files(runs, plot_dir)
    text = {
        "md": lambda: report.markdown(runs),
        "csv": lambda: report.csv_text(runs),
        "html": lambda: report.html(runs, {p.name: p.read_bytes() for p in pngs} or None),
    }[fmt]()
    write_atomic(path, text.encode("utf-8"))
    return pngs


@main.command()
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
@click.option("--overwrite", is_flag=True, help="Replace an existing result file.")
@click.option("-q", "--quiet", is_flag=True, help="No live progress; the summary only.")
def run(
    scenario_file: str,
    output: Path | None,
    base_url: str | None,
    models: tuple[str, ...],
    concurrency: str | None,
    rate: str | None,
    requests: int | None,
    duration_s: float | None,
    transport: str,
    insecure: bool,
    server_pid: int | None,
    thresholds: tuple[str, ...],
    report_dir: Path | None,
    records: Path | None,
    max_duration_s: float | None,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Run SCENARIO (a TOML file) and write a result file and a summary.

    Exits 1 when a stage breaks a threshold (from --threshold or the scenario's [slo]),
    after the results are written.
    """
    started = perf_counter()
    from loadbench.runner import measure, prepare

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
    )
    from loadbench.progress import console as make_console

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
        _finish(prepared, measured, output, report_dir, insecure, console, caught)


def _finish(
    prepared: Prepared,
    measured: Measured,
    output: Path | None,
    report_dir: Path | None,
    insecure: bool,
    console: Any,
    caught: list[int],
) -> None:
    """Write the result file (and report), print the summary, and pick the exit code."""
    from loadbench.runner import write_results

    path, document = write_results(prepared, measured, output, insecure)
    from loadbench.progress import console as make_console
    from loadbench.progress import summary_table
    from loadbench.thresholds import evaluate

    state, target_info, checks = measured.state, measured.target, prepared.checks
    out = make_console(stderr=False)
    if state.stages:
        out.print(summary_table(state.stages))
    for line in _summary_lines(document["summary"]):
        out.print(line)
    from loadbench.serverside import cold_start_text

    if (cold := cold_start_text(target_info)) is not None:
        out.print(cold)
    out.print(f"results: {path}")
    if report_dir is not None:
        md = report_dir / "benchmark_report.md"
        pngs = _write_report([(path.stem, document)], md, "md", report_dir)
        for written in [md, *pngs]:
            out.print(f"report: {written}")
    if measured.interrupted or caught:
        console.print("interrupted: partial results written", style="yellow")
        sys.exit(EXIT_INTERRUPTED)
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


def _load_runs(files: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    from loadbench.analysis import summarize_run
    from loadbench.errors import ResultFileError
    from loadbench.results import load_result, thresholds_of
    from loadbench.thresholds import parse_threshold

    runs = []
    for f in files:
        doc = load_result(f)
        try:
            checks = [parse_threshold(t) for t in thresholds_of(doc)]
        except UsageError as exc:
            raise ResultFileError(f, f"summary.slo: {exc.message.splitlines()[0]}") from None
        doc["summary"] = summarize_run(doc, checks)
        runs.append((Path(f).stem, doc))
    return runs


@main.command()
@click.argument("results", nargs=-1, required=True, metavar="RESULT.json...")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "csv", "html"]),
    default="md",
    show_default=True,
    help="Markdown, CSV (one row per stage) or a self-contained HTML page.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (default: benchmark_report.<format> here).",
)
@click.option(
    "--plot",
    "plot_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write PNG plots (throughput, latency, percentile spectrum) here.",
)
def report(results: tuple[str, ...], fmt: str, output: Path | None, plot_dir: Path | None) -> None:
    """Turn result files into a report; several files are compared side by side."""
    path = output or Path(f"benchmark_report.{fmt}")
    for png in _write_report(_load_runs(results), path, fmt, plot_dir):
        click.echo(f"plot: {png}")
    click.echo(f"report: {path}")


@main.command()
@click.argument("baseline", metavar="BASELINE.json")
@click.argument("candidate", metavar="CANDIDATE.json")
@click.option(
    "--max-regression",
    default="10%",
    show_default=True,
    help="Tolerance before a worse figure counts, e.g. 10% or 0.1.",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="METRIC[.STAT]",
    help="Metric to judge; repeat. Default: ttft.p95 itl.p95 e2e.p95 "
    "output_tokens_per_s error_rate.",
)
@click.option(
    "--min-samples",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Fewer values than this in a histogram never count as a regression.",
)
def compare(
    baseline: str, candidate: str, max_regression: str, metrics: tuple[str, ...], min_samples: int
) -> None:
    """Compare CANDIDATE with BASELINE stage by stage; exit 1 on a regression beyond noise."""
    from loadbench.compare import DEFAULT_METRICS, parse_tolerance
    from loadbench.compare import compare as run_compare
    from loadbench.results import load_result
    from loadbench.thresholds import parse_metric

    tolerance = parse_tolerance(max_regression)
    for m in metrics:
        parse_metric(m)
    result = run_compare(
        load_result(baseline),
        load_result(candidate),
        metrics=metrics or DEFAULT_METRICS,
        max_regression=tolerance,
        min_samples=min_samples,
    )
    from rich.table import Table

    from loadbench.progress import console as make_console

    table = Table(
        title=f"{Path(candidate).name} vs {Path(baseline).name} "
        f"(regression: worse by > {tolerance:.0%} and beyond the runs' noise)"
    )
    for name in ("stage", "metric", "baseline", "candidate", "ratio", "verdict"):
        table.add_column(
            name, justify="left" if name in ("stage", "metric", "verdict") else "right"
        )
    for d in result.deltas:
        table.add_row(
            d.stage,
            d.metric,
            "-" if d.baseline is None else f"{d.baseline:.4g}",
            "-" if d.candidate is None else f"{d.candidate:.4g}",
            "-" if d.ratio is None else f"{d.ratio:.3f}",
            f"[red]{d.verdict}[/red]" if d.regression else str(d.verdict),
        )
    out = make_console(stderr=False)
    out.print(table)
    for label in result.unmatched_baseline:
        out.print(f"not matched: {label} is only in the baseline")
    for label in result.unmatched_candidate:
        out.print(f"not matched: {label} is only in the candidate")
    out.print(f"{result.regressions} regression(s)")
    if result.regressions:
        sys.exit(EXIT_THRESHOLD)


@main.command()
@click.argument("results", nargs=-1, required=True, metavar="RESULT.json...")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The merged result file to write.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
def merge(results: tuple[str, ...], output: Path, overwrite: bool) -> None:
    """Merge result files of one scenario run at the same time by several load generators.

    Histograms are added (exact percentiles of the whole), counters summed and every figure
    recomputed; the output is a valid result file.
    """
    from loadbench.merge import merge_results
    from loadbench.results import dumps, load_result, write_atomic

    if len(results) < 2:
        raise UsageError("merge: expected at least two result files")
    if output.exists() and not overwrite:
        raise UsageError(f"{output}: exists; pass --overwrite to replace it")
    merged = merge_results([load_result(r) for r in results], list(results))
    write_atomic(output, dumps(merged))
    click.echo(f"merged {len(results)} files: {output}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0 = any free one).")
@click.option(
    "--ttft-ms",
    type=float,
    default=80.0,
    show_default=True,
    help="Prefill time once a slot is free.",
)
@click.option(
    "--itl-ms",
    type=float,
    default=15.0,
    show_default=True,
    help="Gap between tokens at batch size 1.",
)
@click.option(
    "--jitter",
    type=float,
    default=0.0,
    show_default=True,
    help="Relative std-dev of every delay (0.1 = 10%).",
)
@click.option(
    "--slots",
    type=int,
    default=8,
    show_default=True,
    help="Requests decoding together; the rest queue.",
)
@click.option(
    "--batch-itl-factor",
    type=float,
    default=0.08,
    show_default=True,
    help="ITL grows by this fraction per extra request in the batch.",
)
@click.option(
    "--max-tokens-default",
    type=int,
    default=128,
    show_default=True,
    help="Tokens generated when a request gives no max_tokens.",
)
@click.option("--seed", type=int, default=None, help="Seed for jitter and faults.")
@click.option(
    "--error-rate", type=float, default=0.0, show_default=True, help="Fraction answered HTTP 500."
)
@click.option(
    "--rate-limit-rate", type=float, default=0.0, show_default=True, help="Fraction answered 429."
)
@click.option(
    "--drop-rate", type=float, default=0.0, show_default=True, help="Fraction dropped mid-stream."
)
@click.option(
    "--malformed-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction with one broken SSE line in an event.",
)
@click.option(
    "--stall-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction that stall after the first token.",
)
@click.option(
    "--unavailable-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction answered 503.",
)
@click.option(
    "--unauthorized-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction answered 401.",
)
@click.option(
    "--reset-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction reset (TCP RST) before any response byte.",
)
@click.option(
    "--silent-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction that send the headers, then nothing for --stall-s.",
)
@click.option(
    "--not-sse-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction answered 200 with an HTML page.",
)
@click.option(
    "--empty-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction that finish without a content token.",
)
@click.option(
    "--no-done-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction that end without finish_reason or [DONE].",
)
@click.option(
    "--bad-json-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction with one event of truncated JSON.",
)
@click.option(
    "--stall-s", type=float, default=30.0, show_default=True, help="Length of a stall or a silence."
)
def simulate(host: str, port: int, **options: Any) -> None:
    """Serve a simulated OpenAI-compatible LLM (continuous batching, optional faults)."""
    from loadbench.simserver import SimConfig
    from loadbench.simserver import run as serve

    config = SimConfig(**options)
    problems = config.validate()
    if problems:
        raise UsageError("\n".join(f"simulate: {p}" for p in problems))
    serve(config, host, port)
