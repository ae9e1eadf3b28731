"""Servers that loadbench starts itself ([target.launch]): spawn, wait until ready, stop.

Owning the process is what makes a cold start a figure rather than a guess: the clock
starts at the spawn, ``ready`` is the first 200 from the ready URL (llama.cpp answers 503
while it loads the model), and the CLI adds the first request's time to first token.
The server runs in its own process group (session on POSIX), so a Ctrl-C aimed at
loadbench does not kill it before the partial results are written; loadbench stops it
on the way out, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import httpx

from loadbench.errors import TargetUnreachable, UsageError
from loadbench.observe import beside_api
from loadbench.scenario import LaunchSpec, redact_argv

__all__ = ["Launched", "default_ready_url", "launched_server"]

POLL_S = 0.025  # the ready check's period: the resolution of the ready figure
STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class Launched:
    pid: int
    started_ns: int  # perf_counter_ns at the spawn
    ready_ns: int  # perf_counter_ns of the first 200 from the ready URL
    command: tuple[str, ...]  # as shown to users: secrets redacted

    @property
    def ready_s(self) -> float:
        return (self.ready_ns - self.started_ns) / 1e9


def default_ready_url(base_url: str) -> str:
    """``http://host:port/v1`` → ``http://host:port/health`` (llama.cpp, vLLM, SGLang)."""
    return beside_api(base_url, "health")


def _answers(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _spawn_options() -> dict[str, Any]:
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _tail(log: IO[bytes]) -> str:
    log.seek(0)
    lines = log.read().decode("utf-8", "replace").splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(f"  | {line}" for line in lines) or "  | (no output)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the whole group (a wrapper script and its server), SIGKILL if it lingers.

    Windows has no process groups to signal: terminate() ends the process itself.
    """
    if proc.poll() is not None:
        return
    killpg = getattr(os, "killpg", None)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if killpg is not None:
            killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if killpg is not None:
                killpg(proc.pid, getattr(signal, "SIGKILL", signal.SIGTERM))
            else:
                proc.kill()
        proc.wait(STOP_GRACE_S)


@contextlib.contextmanager
def launched_server(spec: LaunchSpec, base_url: str) -> Iterator[Launched]:
    """Starts ``spec.command``, yields once its ready URL answers 200, stops it after.

    Raises UsageError (exit 2) when the program cannot be started or something already
    answers at the ready URL (the cold start would be someone else's), and
    TargetUnreachable (exit 3, with the end of the server's output) when it exits or is
    not ready within ``spec.ready_timeout_s``.
    """
    ready_url = spec.ready_url or default_ready_url(base_url)
    shown = redact_argv(spec.command)
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        if _answers(client, ready_url):
            raise UsageError(
                f"target.launch: something already answers at {ready_url}; stop it first, "
                f"or drop [target.launch] to load-test it as it is"
            )
        with tempfile.TemporaryFile() as log:
            started_ns = time.perf_counter_ns()
            try:
                proc = subprocess.Popen(
                    list(spec.command),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    **_spawn_options(),
                )
            except OSError as exc:
                raise UsageError(
                    f"target.launch.command: cannot start {shown[0]!r}: {exc.strerror or exc}"
                ) from None
            try:
                deadline = started_ns + int(spec.ready_timeout_s * 1e9)
                while not _answers(client, ready_url):
                    code = proc.poll()
                    if code is not None:
                        raise TargetUnreachable(
                            f"the launched server ({' '.join(shown)}) exited with code {code} "
                            f"before {ready_url} answered 200; the end of its output:\n"
                            f"{_tail(log)}"
                        )
                    if time.perf_counter_ns() > deadline:
                        raise TargetUnreachable(
                            f"the launched server ({' '.join(shown)}) was not ready at "
                            f"{ready_url} within {spec.ready_timeout_s:g} s; the end of its "
                            f"output:\n{_tail(log)}"
                        )
                    time.sleep(POLL_S)
                yield Launched(proc.pid, started_ns, time.perf_counter_ns(), shown)
            finally:
                _stop(proc)
