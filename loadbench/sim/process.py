"""Starting the simulator as a child process and reading back the port it announces.

Kept apart from ``simserver`` because it is the parent's side: it needs the simulator's
flags and its announce line, never its model. The child is ``python -m loadbench
simulate``, which lands in ``simserver.run``. ``simserver`` re-exports ``SimulatorHandle``,
``config_to_args`` and ``simulator_process``.

The child must not outlive its parent, even one killed with SIGKILL, which runs no
clean-up: its stdin is a pipe the parent holds open and never writes, and a child started
with ``EXIT_ON_STDIN_EOF_ENV`` set exits at end of file, that is when the parent is gone,
on every platform (``cli.app`` does the child's side; on Linux it also asks the kernel
for SIGKILL at the parent's death).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import anyio

from loadbench.errors import LoadbenchError
from loadbench.sim.faults import SimConfig
from loadbench.sim.served import MODEL_FIELDS, model_args

# Read by ``loadbench.cli.app`` in the child; the same name is spelled there.
EXIT_ON_STDIN_EOF_ENV = "LOADBENCH_EXIT_ON_STDIN_EOF"
_ANNOUNCE_RE = re.compile(rb"listening on http://(?P<host>.+):(?P<port>\d+)/v1")


@dataclass(frozen=True)
class SimulatorHandle:
    base_url: str
    pid: int
    started_ns: int  # perf_counter_ns when the process was spawned
    ready_ns: int  # perf_counter_ns when it announced its port


def host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def config_to_args(config: SimConfig) -> list[str]:
    """Flags that rebuild ``config`` in a child process; defaults are left out.

    A switch (``prefix_cache``, off by default) is its flag alone.
    """
    args: list[str] = []
    for field in dataclasses.fields(SimConfig):
        value = getattr(config, field.name)
        if field.name not in MODEL_FIELDS and value != field.default:
            flag = f"--{field.name.replace('_', '-')}"
            args += [flag] if value is True else [flag, repr(value)]
    return args + model_args(config.models, config.broken_models)


async def _read_announce(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[bytes, bool]:
    """The announce line (empty if none came), and whether the wait timed out.

    A blocking ``readline`` in a worker thread is the one way to read a pipe that works on
    Windows too; on timeout the child is killed, which ends the read with EOF.
    """
    assert proc.stdout is not None
    stdout = proc.stdout
    found = b""
    timed_out = False
    async with anyio.create_task_group() as tg:

        async def watchdog() -> None:
            nonlocal timed_out
            await anyio.sleep(timeout_s)
            timed_out = True
            proc.kill()

        tg.start_soon(watchdog)
        while not found:
            line = await anyio.to_thread.run_sync(stdout.readline)
            if not line:
                break
            if _ANNOUNCE_RE.search(line):
                found = line
        tg.cancel_scope.cancel()
    return found, timed_out


@contextlib.contextmanager
def simulator_process(
    config: SimConfig,
    host: str = "127.0.0.1",
    startup_timeout_s: float = 15.0,
    *,
    command: Sequence[str] | None = None,
) -> Iterator[SimulatorHandle]:
    """Runs the simulator in a child process, so its event loop never competes with the client.

    ``command`` replaces ``[python, -m, loadbench, simulate]``. The port is read from the
    announce line on stdout; stderr goes to a temporary file (a pipe nobody reads could fill
    and block the child) and its tail is the error message when start-up fails. Call it
    from synchronous code: it runs a short event loop of its own while it waits. On Linux
    the child dies with the *thread* that started it (PR_SET_PDEATHSIG), so keep the
    ``with`` block in that thread.
    """
    prefix = (
        list(command) if command is not None else [sys.executable, "-m", "loadbench", "simulate"]
    )
    argv = [*prefix, "--host", host, "--port", "0", *config_to_args(config)]
    with tempfile.TemporaryFile() as stderr:
        started_ns = time.perf_counter_ns()
        with subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,  # the lifeline: never written, closed by our exit
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, EXIT_ON_STDIN_EOF_ENV: "1"},
        ) as proc:
            try:
                line, timed_out = anyio.run(_read_announce, proc, startup_timeout_s)
                ready_ns = time.perf_counter_ns()
                match = _ANNOUNCE_RE.search(line)
                if match is None:
                    _stop(proc)
                    stderr.seek(0)
                    tail = stderr.read()[-2000:].decode("utf-8", "replace").strip()
                    why = (
                        f"did not announce its port within {startup_timeout_s:g} s"
                        if timed_out
                        else f"exited with code {proc.returncode} before announcing its port"
                    )
                    detail = f":\n{tail}" if tail else ""
                    raise LoadbenchError(f"the simulator {why} ({' '.join(argv)}){detail}")
                url_host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host_for_url(host)
                port = int(match["port"])
                yield SimulatorHandle(
                    f"http://{url_host}:{port}/v1", proc.pid, started_ns, ready_ns
                )
            finally:
                _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """terminate() is TerminateProcess on Windows, SIGTERM elsewhere; kill() if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
