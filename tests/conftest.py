"""Shared fixtures: the simulator on 127.0.0.1 (port 0) and scenario files for the CLI."""

from __future__ import annotations

import contextlib
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import pytest

from loadbench.sim.server import SimConfig, serve

FAST = SimConfig(ttft_ms=5, itl_ms=1, slots=64, seed=1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Sim:
    """A simulator running in the test's own event loop; ``url`` is its /v1 base."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1"


async def start_sim(config: SimConfig, tg: anyio.abc.TaskGroup) -> Sim:
    port = await tg.start(serve, config)
    return Sim(port)


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    async with anyio.create_task_group() as tg:
        yield await start_sim(FAST, tg)
        tg.cancel_scope.cancel()


@pytest.fixture
def write_scenario(tmp_path: Path) -> Callable[..., Path]:
    """Writes a scenario file; ``body`` is TOML, dedented."""

    def write(body: str, name: str = "scenario.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(body), encoding="utf-8")
        return path

    return write


@contextlib.contextmanager
def threaded_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A small stdlib HTTP server on 127.0.0.1 (port 0) in a thread, for behaviour the
    simulator does not have (a key check, a slow prompt, /tokenize); yields its /v1 base."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
