"""The servers loadbench provides: the built-in simulated server (an OpenAI-compatible
streaming endpoint with exact token timing, batch slots, injected faults, several models
and llama.cpp's dialect, run in-process or as a child), and the adapter server that puts
a model written in Python behind the same HTTP.

They stand beside the pipeline, not in it: loadbench talks to them over real sockets like
to any server, and only the runner (to start one) and the ``simulate`` and ``serve``
commands import them.
"""

from loadbench.sim.adapter import load_adapter, run_adapter, serve_adapter
from loadbench.sim.server import (
    SimConfig,
    SimModel,
    model_args,
    parse_model_arg,
    run,
    simulator_process,
)

__all__ = [
    "SimConfig",
    "SimModel",
    "load_adapter",
    "model_args",
    "parse_model_arg",
    "run",
    "run_adapter",
    "serve_adapter",
    "simulator_process",
]
