"""The ``loadbench`` group: the one place errors are caught, and the signal handling.

Exit codes:
    0    done
    1    a stage broke a threshold or SLO, or a comparison found a regression
    2    bad input: a scenario, an option, a file
    3    the target did not answer before the first stage
    130  interrupted (Ctrl-C, SIGTERM) after the partial results were written
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any, NoReturn

import click

from loadbench import __version__
from loadbench.errors import LoadbenchError

EXIT_OK = 0
EXIT_THRESHOLD = 1
EXIT_INTERRUPTED = 130


def _fail(exc: LoadbenchError) -> NoReturn:
    for line in exc.message.splitlines() or [type(exc).__name__]:
        click.echo(f"Error: {line}", err=True)
    sys.exit(exc.exit_code)


class _Group(click.Group):
    """Turns every LoadbenchError into ``Error: …`` on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LoadbenchError as exc:
            _fail(exc)
        except KeyboardInterrupt:  # before any request went out: nothing to keep
            click.echo("interrupted before the first request: no results written", err=True)
            sys.exit(EXIT_INTERRUPTED)


def _stop_signals() -> list[signal.Signals]:
    return [signal.SIGINT] if sys.platform == "win32" else [signal.SIGINT, signal.SIGTERM]


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _obey_sigint() -> None:
    """Ctrl-C and ``kill -INT`` stop loadbench even when it started with SIGINT ignored.

    Shells start background jobs (``loadbench run … &`` in a script, CI steps) with SIGINT
    ignored, and Python then leaves it ignored: only SIGTERM would stop the run. Python's
    own handler is put back, not one of ours, so that anyio's event loop still turns the
    signal into a cancellation of the run, as it does for a foreground Ctrl-C.
    """
    if threading.current_thread() is threading.main_thread():  # signal.signal's rule
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Set by ``loadbench.sim.process`` for the simulator it starts; the same name is spelled there.
_EXIT_ON_STDIN_EOF_ENV = "LOADBENCH_EXIT_ON_STDIN_EOF"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _exit_with_parent() -> None:
    """A child started by ``simulator_process`` ends when its parent does, killed or not.

    The parent holds our stdin open and never writes to it, so end of file means it is
    gone: a blocking read in a daemon thread sees that on every platform, whatever the
    main thread is doing. On Linux the kernel is asked for SIGKILL at the parent's death
    too, which needs no thread to run; the pipe also covers a parent that died before
    that request was made. The variable is removed so that no grandchild inherits it.
    """
    if os.environ.pop(_EXIT_ON_STDIN_EOF_ENV, None) != "1":
        return
    if sys.platform == "linux":
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def watch_stdin() -> None:
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        os._exit(0)  # nothing to save: the one reader of our output is gone

    threading.Thread(target=watch_stdin, name="exit-with-parent", daemon=True).start()


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[list[int]]:
    """While results are written, a Ctrl-C or SIGTERM is noted, not obeyed: the file is
    short work, and losing it to a second keypress would lose the run."""
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda n, _f: caught.append(n)) for s in _stop_signals()}
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="loadbench")
def main() -> None:
    """Load-test OpenAI-compatible LLM servers: streaming requests from a scenario file,
    exact latency percentiles (HDR histograms), honest about coordinated omission and about
    its own CPU."""
    _obey_sigint()
    _exit_with_parent()
