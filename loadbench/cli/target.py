"""Where a run's target comes from, and how the run is hosted.

The simulator or a server loadbench launches (with its cold start), Foundry Local's
endpoint, or a plain URL; the server's process found for sampling; how many worker
processes share the load; and the event loop's backend. Apart from ``runner`` so the
orchestration reads in one screen, and shared with ``check``, which reaches targets the same
way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator
from typing import Any

from loadbench.cli.stream_delivery import target_url
from loadbench.errors import UsageError


def workers_of(option: str | None, in_file: int | str | None) -> int | str | None:
    """``--workers`` beats ``[load] workers``; 1 is this process, as without either."""
    value: int | str | None = in_file
    if option is not None:
        if option != "auto" and not (option.isdigit() and 1 <= int(option) <= 1024):
            raise UsageError(f'--workers: expected 1 to 1024 or "auto", got {option}')
        value = option if option == "auto" else int(option)
    return None if value in (None, 1) else value


@contextlib.contextmanager
def target(scenario: Any) -> Iterator[tuple[str, dict[str, object]]]:
    """Yields the base URL to load and what the result file says about the target.

    When loadbench starts the server itself (the simulator, or ``[target.launch]``), the
    target also gets ``cold_start.ready_s``; the first request's figures join it later.
    """
    spec, launch = scenario.target.simulate, scenario.target.launch
    if launch is not None:
        from loadbench.run import launched_server

        with launched_server(launch, scenario.target.base_url) as server:
            yield (
                scenario.target.base_url,
                {
                    "base_url": scenario.target.base_url,
                    "simulated": False,
                    "launched": list(server.command),
                    "server_pid": server.pid,
                    "cold_start": {"ready_s": round(server.ready_s, 3)},
                },
            )
        return
    if spec is None:
        url = target_url(scenario.target)  # foundry_local = true: the service says
        yield url, {"base_url": url, "simulated": False}
        return
    from loadbench.sim import SimConfig, simulator_process

    config = SimConfig(**dataclasses.asdict(spec))
    with simulator_process(config) as handle:
        startup_s = round((handle.ready_ns - handle.started_ns) / 1e9, 3)
        yield (
            handle.base_url,
            {
                "base_url": handle.base_url,
                "simulated": True,
                "simulator": dataclasses.asdict(config),
                "startup_s": startup_s,
                "cold_start": {"ready_s": startup_s},
            },
        )


def find_server_pid(url: str, given: int | None, target: dict[str, object]) -> int | None:
    if given is not None:
        return given
    known = target.get("server_pid")
    if isinstance(known, int):
        return known
    import httpx

    from loadbench.observe import find_listening_pid

    parsed = httpx.URL(url)
    return find_listening_pid(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80))


def backend_options() -> dict[str, Any]:
    if sys.platform == "win32" or os.environ.get("LOADBENCH_LOOP") == "asyncio":
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
