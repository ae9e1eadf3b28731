"""``loadbench report``, ``compare`` and ``merge``: commands that read result files only."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from loadbench.cli.app import EXIT_THRESHOLD
from loadbench.errors import UsageError


def write_report(
    runs: list[tuple[str, dict[str, Any]]], path: Path, fmt: str, plot_dir: Path | None
) -> list[Path]:
    """Plots first (an HTML report embeds them), then the report; returns the PNGs."""
    from loadbench.report import csv_text, html, markdown
    from loadbench.results import write_atomic

    pngs: list[Path] = []
    if plot_dir is not None:
        from loadbench.report import plot_files

        pngs = plot_files(runs, plot_dir)
    text = {
        "md": lambda: markdown(runs),
        "csv": lambda: csv_text(runs),
        "html": lambda: html(runs, {p.name: p.read_bytes() for p in pngs} or None),
    }[fmt]()
    write_atomic(path, text.encode("utf-8"))
    return pngs


def _load_runs(files: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    from loadbench.errors import ResultFileError
    from loadbench.results import load_result, summarize_run, thresholds_of
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


@click.command()
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
    for png in write_report(_load_runs(results), path, fmt, plot_dir):
        click.echo(f"plot: {png}")
    click.echo(f"report: {path}")


@click.command()
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
    from loadbench.results import DEFAULT_METRICS, load_result, parse_tolerance
    from loadbench.results import compare as run_compare
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

    from loadbench.run import console as make_console

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


@click.command()
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
    from loadbench.results import dumps, load_result, merge_results, write_atomic

    if len(results) < 2:
        raise UsageError("merge: expected at least two result files")
    if output.exists() and not overwrite:
        raise UsageError(f"{output}: exists; pass --overwrite to replace it")
    merged = merge_results([load_result(r) for r in results], list(results))
    write_atomic(output, dumps(merged))
    click.echo(f"merged {len(results)} files: {output}")
