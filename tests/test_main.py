"""The entry point: a Ctrl-C while the modules load ends cleanly (exit 130, no traceback)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# SIGALRM stands in for the keypress: it fires 1 ms in, long before the CLI's modules
# (click, rich, anyio, httpx: ~0.2 s) have loaded, and raises KeyboardInterrupt there.
_CHILD = """
import signal, sys
def interrupt(signum, frame):
    raise KeyboardInterrupt
from loadbench.__main__ import run
signal.signal(signal.SIGALRM, interrupt)
sys.argv = ["loadbench", "--version"]
signal.setitimer(signal.ITIMER_REAL, 0.001)
run()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGALRM is POSIX-only")
def test_ctrl_c_while_loading_exits_130_without_a_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "interrupted before the first request" in proc.stderr


def test_python_dash_m_still_runs_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "loadbench", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("loadbench, version")
