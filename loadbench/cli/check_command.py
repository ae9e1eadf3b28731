"""``loadbench check``: every model listed and answering, before a load is sent."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from loadbench.errors import UsageError

EXIT_NOT_ANSWERED = 1


@click.command()
@click.argument("scenario_file", metavar="[SCENARIO]", required=False)
@click.option("--base-url", help="Endpoint, e.g. http://127.0.0.1:5273/v1 (beats the scenario).")
@click.option("--model", "models", multiple=True, help="Model to check; repeat for several.")
@click.option(
    "--api-key-env",
    metavar="NAME",
    help="Environment variable holding the API key (default: the scenario's api_key_env).",
)
@click.option(
    "--timeout-s", type=float, default=30.0, show_default=True, help="Per request, in seconds."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the table as JSON.",
)
def check(
    scenario_file: str | None,
    base_url: str | None,
    models: tuple[str, ...],
    api_key_env: str | None,
    timeout_s: float,
    output: Path | None,
) -> None:
    """Ask the endpoint for its models, resolve each name to a served id (Foundry Local
    aliases too) and send each model one short streaming chat request.

    Exits 0 when every model answered, 1 when any did not, 3 when the endpoint does not
    answer at all, 2 for bad input.
    """
    from loadbench.cli.target import target
    from loadbench.scenario import apply_overrides, load_scenario

    if scenario_file is None:
        if base_url is None:
            base_url = next(
                (os.environ[n] for n in _ENV_URLS if os.environ.get(n, "").strip()), None
            )
            if base_url is not None:
                base_url = _with_v1(base_url)
        if base_url is None:
            raise UsageError("check: give a SCENARIO or --base-url (or set LOADBENCH_BASE_URL)")
        if not models:
            raise UsageError("check: give at least one --model")
        _run(base_url, models, api_key_env, timeout_s, output)
        return
    scenario = apply_overrides(load_scenario(scenario_file), base_url=base_url, models=models)
    key_env = api_key_env or scenario.target.api_key_env
    with target(scenario) as (url, _):
        _run(url, scenario.models, key_env, timeout_s, output)


_ENV_URLS = ("LOADBENCH_BASE_URL", "OPENAI_BASE_URL", "FOUNDRY_LOCAL_ENDPOINT")


def _with_v1(url: str) -> str:
    """Foundry Local prints its endpoint without the ``/v1`` its routes live under."""
    stripped = url.rstrip("/")
    return stripped if stripped.endswith("/v1") else stripped + "/v1"


def _run(
    base_url: str,
    models: tuple[str, ...],
    key_env: str | None,
    timeout_s: float,
    output: Path | None,
) -> None:
    from rich.table import Table

    from loadbench.models import run_check
    from loadbench.results import dumps, write_atomic
    from loadbench.run import console as make_console

    api_key = (os.environ.get(key_env) or None) if key_env else None
    if key_env and api_key is None:
        raise UsageError(f"check: the API key variable {key_env} is not set")
    listing, results = run_check(base_url, models, api_key=api_key, timeout_s=timeout_s)
    out = make_console(stderr=False)
    if listing.problem:
        out.print(f"warning: {listing.problem}; models not checked against a list")
    table = Table(title=f"loadbench check {base_url}")
    for column in ("model", "served id", "listed", "answered", "TTFT ms", "tokens", "answer"):
        table.add_column(column, justify="right" if column in ("TTFT ms", "tokens") else "left")
    table.add_column("error", overflow="fold")
    for r in results:
        table.add_row(
            r.model,
            r.served_as,
            "-" if r.listed is None else ("yes" if r.listed else "no"),
            "yes" if r.answered else "no",
            "-" if r.ttft_ms is None else f"{r.ttft_ms:.1f}",
            str(r.tokens),
            r.answer,
            r.error or "",
        )
    out.print(table)
    if output is not None:
        document = {
            "base_url": base_url,
            "listed": None if listing.ids is None else list(listing.ids),
            "listing_problem": listing.problem,
            "models": [r.to_dict() for r in results],
        }
        write_atomic(output, dumps(document))
        out.print(f"written: {output}")
    if not all(r.answered for r in results):
        sys.exit(EXIT_NOT_ANSWERED)
