"""The built-in simulated server: an OpenAI-compatible streaming endpoint with exact token
timing, batch slots, injected faults and llama.cpp's dialect, run in-process or as a child.

It stands beside the pipeline, not in it: loadbench talks to it over real sockets like to
any server, and only the runner (to start it) and the ``simulate`` command import it.
"""

from loadbench.sim.server import SimConfig, run, simulator_process

__all__ = ["SimConfig", "run", "simulator_process"]
