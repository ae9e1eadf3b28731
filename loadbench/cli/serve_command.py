"""``loadbench serve``: a model written in Python, behind an OpenAI-compatible endpoint."""

from __future__ import annotations

from pathlib import Path

import click

from loadbench.errors import UsageError


@click.command()
@click.option(
    "--adapter",
    "target",
    required=True,
    metavar="MODULE:CLASS",
    help="The adapter class: generate(prompt, **params), optionally load(weights_path).",
)
@click.option(
    "--weights",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Passed to the adapter's load() once, before the port opens.",
)
@click.option("--name", default=None, help="Model id to serve [default: the adapter's name].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0 = any free one).")
@click.option(
    "--slots",
    type=int,
    default=1,
    show_default=True,
    help="generate() calls at a time; the rest wait in order.",
)
def serve(
    target: str, weights: Path | None, name: str | None, host: str, port: int, slots: int
) -> None:
    """Serve a Python model class (an adapter) as an OpenAI-compatible streaming endpoint."""
    from loadbench.sim import load_adapter, run_adapter

    if slots < 1:
        raise UsageError(f"--slots: expected a positive integer, got {slots}")
    adapter, served = load_adapter(target, name=name)
    run_adapter(adapter, served, host, port, weights=weights, slots=slots)
