"""``loadbench simulate``: the built-in simulated server in the foreground."""

from __future__ import annotations

from typing import Any

import click

from loadbench.errors import UsageError


@click.command()
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
@click.option(
    "--prefill-ms-per-token",
    type=float,
    default=0.0,
    show_default=True,
    help="Time to first token grows by this per prompt token not in the prefix cache.",
)
@click.option(
    "--early-stop-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction of answers that stop before max_tokens (never with ignore_eos).",
)
@click.option(
    "--prefix-cache",
    is_flag=True,
    default=False,
    help="Remember prompt prefixes (16-word blocks): a hit skips their prefill time.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME[:TTFT_MS:ITL_MS]",
    help="A model to serve, with its own timing; repeat for several (default: sim-model, "
    "answering any name). A JSON object also sets answer, verdicts, n_params, size, n_ctx_train.",
)
@click.option(
    "--broken-model",
    "broken_models",
    multiple=True,
    metavar="NAME",
    help="A model listed but always answered HTTP 500; repeat for several.",
)
def simulate(host: str, port: int, models: tuple[str, ...], **options: Any) -> None:
    """Serve a simulated OpenAI-compatible LLM (continuous batching, optional faults)."""
    from loadbench.sim import SimConfig, parse_model_arg
    from loadbench.sim import run as serve

    try:
        served = tuple(parse_model_arg(m) for m in models)
    except ValueError as exc:
        raise UsageError(f"simulate: {exc}") from None
    config = SimConfig(**options, models=served)
    problems = config.validate()
    if problems:
        raise UsageError("\n".join(f"simulate: {p}" for p in problems))
    serve(config, host, port)
