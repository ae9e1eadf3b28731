"""How the driver reaches a worker: a child process over pipes, or a Ray actor.

Both carry the same messages (``wire``); a link only moves them and says when the worker
is gone (``receive`` returns None) and how to end it at once (``kill``). The process link
starts ``python -m loadbench.workers.worker`` with ``anyio.open_process``: no fork, the
same on Linux, macOS and Windows.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

import anyio
import orjson
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from loadbench.workers.wire import HEADER_BYTES, frame, unframe_length

__all__ = ["Link", "ProcessLink", "start_process_link"]

WORKER_MODULE = "loadbench.workers.worker"


class Link(Protocol):
    rank: int
    pid: int | None

    async def send(self, msg: dict[str, Any]) -> None: ...

    async def receive(self) -> dict[str, Any] | None: ...

    async def kill(self) -> None: ...

    async def close(self, timeout_s: float) -> str | None:
        """Let the worker end after ``bye``; kill it after ``timeout_s``. How it ended."""
        ...


class ProcessLink:
    def __init__(self, rank: int, process: Process) -> None:
        self.rank = rank
        self.process = process
        self.pid: int | None = process.pid
        assert process.stdout is not None
        assert process.stdin is not None
        self._out = BufferedByteReceiveStream(process.stdout)
        self._in = process.stdin

    async def send(self, msg: dict[str, Any]) -> None:
        # A dead worker shows as end of stream on the receiving side.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await self._in.send(frame(msg))

    async def receive(self) -> dict[str, Any] | None:
        try:
            header = await self._out.receive_exactly(HEADER_BYTES)
            body = await self._out.receive_exactly(unframe_length(header))
        except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return None
        msg = orjson.loads(body)
        return msg if isinstance(msg, dict) else None

    def exit_text(self) -> str | None:
        code = self.process.returncode
        if code is None:
            return None
        return f"killed by signal {-code}" if code < 0 else f"exited with status {code}"

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):
            self.process.kill()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self.process.wait()

    async def close(self, timeout_s: float) -> str | None:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(Exception):
                await self._in.aclose()
            with anyio.move_on_after(timeout_s):
                await self.process.wait()
            if self.process.returncode is None:
                await self.kill()
            with contextlib.suppress(Exception):
                await self._out.aclose()
        return self.exit_text()


def _env() -> dict[str, str]:
    """The driver's own loadbench first on the path: a worker runs the same code."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.pop("LOADBENCH_EXIT_ON_STDIN_EOF", None)  # the simulator's; a worker reads stdin
    return env


async def start_process_link(rank: int, python: str = sys.executable) -> ProcessLink:
    process = await anyio.open_process(
        [python, "-m", WORKER_MODULE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,  # a worker's traceback goes where the driver's would
        env=_env(),
    )
    return ProcessLink(rank, process)
