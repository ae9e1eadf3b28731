"""The simulator child dies with its parent, however the parent dies.

A parent killed with SIGKILL runs no clean-up, so only the child can notice: these tests
kill real parents and look for the real child afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from loadbench.sim import SimConfig
from loadbench.sim.process import EXIT_ON_STDIN_EOF_ENV, simulator_process

PARENT = """
import sys, time
from loadbench.sim import SimConfig, simulator_process
with simulator_process(SimConfig()) as sim:
    print(sim.pid, flush=True)
    time.sleep(60)
"""


def gone(child: psutil.Process, within_s: float = 10) -> bool:
    """Whether ``child`` ended (a zombie counts: only reaping is left, by its new parent)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if not child.is_running() or child.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_killing_the_parent_leaves_no_simulator() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"the parent printed {line!r} (exit {parent.poll()})"
        child = psutil.Process(int(line))
        assert child.is_running()
        parent.kill()  # SIGKILL on POSIX, TerminateProcess on Windows: no clean-up at all
        parent.wait(10)
        assert gone(child), f"the simulator (pid {child.pid}) outlived its killed parent"
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_end_of_stdin_alone_ends_the_simulator() -> None:
    """The portable half, without the parent dying (so no PR_SET_PDEATHSIG on Linux):
    the child exits once the pipe on its stdin is closed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadbench", "simulate", "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, EXIT_ON_STDIN_EOF_ENV: "1"},
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        assert b"listening on" in proc.stdout.readline()
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_the_simulator_still_stops_with_its_context() -> None:
    with simulator_process(SimConfig()) as sim:
        child = psutil.Process(sim.pid)
        assert EXIT_ON_STDIN_EOF_ENV not in os.environ  # set for the child only
    assert not child.is_running()
