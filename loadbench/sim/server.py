"""The built-in simulated OpenAI-compatible LLM server: the demo's target and every test's.

It models what shapes an inference server's latency: ``slots`` requests decode together
(continuous batching) while the rest wait FIFO; the first token comes ``ttft_ms`` after a
slot is taken, plus ``prefill_ms_per_token`` for each prompt token its prefix cache (when
on) does not hold; each later gap is ``itl_ms`` stretched by the batch size; a share of
answers (``early_stop_rate``) ends early unless the request asks for ``ignore_eos``.
Token deadlines are absolute (``anyio.sleep_until``), so a slow event loop shows as late
tokens, not as a slower model. Every SSE event is written as its own HTTP chunk at its
due time, so a client's timestamps measure the simulated timing, as against a real server.

It mimics llama.cpp's per-response ``timings`` and its Prometheus ``GET /metrics``, so that
loadbench's server-side split (TTFT = server prefill + queueing, network and harness) and
its metrics scrape are exercised offline, in the tests and in ``make demo``, not only
against a real llama-server. ``prompt_ms`` runs from the moment a request gets its slot to
its first token, so time spent waiting for a slot shows as ``ttft_outside_prefill`` and as
``llamacpp:requests_deferred``, as with llama.cpp's own slots.

This module holds the entry points. The model (slots, timing, faults per request) is
``sim.simulator``; ``SimConfig`` and the pure parts (request parsing, fault draw, response
bytes) live in ``sim.faults``; the hand-written HTTP/1.1 in ``sim.http``; llama.cpp's
formats in ``sim.llamacpp``; starting it as a child process in ``sim.process``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import sys
from collections.abc import Callable, Sequence

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from loadbench.errors import UsageError
from loadbench.sim.faults import Fault, SimConfig
from loadbench.sim.process import SimulatorHandle, config_to_args, host_for_url, simulator_process
from loadbench.sim.served import MODEL_FIELDS, SimModel, model_args, parse_model_arg
from loadbench.sim.simulator import Simulator

__all__ = [
    "Fault",
    "SimConfig",
    "SimModel",
    "SimulatorHandle",
    "config_to_args",
    "model_args",
    "parse_model_arg",
    "run",
    "serve",
    "simulator_process",
]


# -- entry points ------------------------------------------------------------------------


async def serve(
    config: SimConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serves until cancelled; reports the bound port (``port=0`` picks a free one)."""
    problems = config.validate()
    if problems:
        raise UsageError("\n".join(f"simulator: {p}" for p in problems))
    simulator = Simulator(config)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        task_status.started(listener.extra(SocketAttribute.local_port))
        await listener.serve(simulator.handle)


def run(
    config: SimConfig, host: str, port: int, *, announce: Callable[[str], None] = print
) -> None:
    """Blocking entry for ``loadbench simulate``; Ctrl-C ends it quietly."""
    problems = config.validate()
    if problems:  # checked here so the caller gets a UsageError, not an exception group
        raise UsageError("\n".join(f"simulator: {p}" for p in problems))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            bound = await tg.start(serve, config, host, port)
            announce(f"loadbench simulator listening on http://{host_for_url(host)}:{bound}/v1")
            sys.stdout.flush()

    options: dict[str, object] = {}
    if sys.platform != "win32" and importlib.util.find_spec("uvloop") is not None:
        options["use_uvloop"] = True
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(main, backend="asyncio", backend_options=options)


def _parse_args(argv: Sequence[str]) -> tuple[SimConfig, str, int]:
    """The same flags as ``loadbench simulate``, for ``python -m loadbench.sim.server``."""
    parser = argparse.ArgumentParser(prog="python -m loadbench.sim.server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    for field in dataclasses.fields(SimConfig):
        if field.name in MODEL_FIELDS:
            continue
        if field.default is False:  # a switch: ``--prefix-cache``
            parser.add_argument(f"--{field.name.replace('_', '-')}", action="store_true")
            continue
        kind = int if field.name in ("slots", "max_tokens_default", "seed") else float
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=field.default)
    parser.add_argument("--model", action="append", default=[], dest="models")
    parser.add_argument("--broken-model", action="append", default=[], dest="broken_models")
    options = vars(parser.parse_args(argv))
    host, port = options.pop("host"), options.pop("port")
    try:
        models = tuple(parse_model_arg(m) for m in options.pop("models"))
    except ValueError as exc:
        parser.error(str(exc))
    config = SimConfig(**options, models=models)
    problems = config.validate()
    if problems:
        parser.error("; ".join(problems))
    return config, host, port


if __name__ == "__main__":
    run(*_parse_args(sys.argv[1:]))
