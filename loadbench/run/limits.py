"""The open-file limit: thousands of streams need thousands of sockets.

A run at high concurrency that hits the limit fails half-way with "Too many open files";
checking before the first request turns that into a clear message, or no problem at all
when the soft limit can be raised to the hard one. POSIX only: Windows has no such limit
for sockets, and ``resource`` does not exist there.
"""

from __future__ import annotations

import sys

from loadbench.errors import UsageError

# Files the process holds besides its sockets: the interpreter, libraries, logs, stdio.
SPARE_FILES = 64


def ensure_open_files(streams: int) -> int | None:
    """Raise the soft limit when needed; returns the limit in force (None: not applicable)."""
    if sys.platform == "win32":
        return None
    import resource

    needed = streams + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < needed:
        raise UsageError(
            f"{streams} concurrent streams need about {needed} open files, but the limit is "
            f"{soft} (hard limit {hard}); raise it first, e.g. `ulimit -n {needed}`, "
            "or lower the concurrency"
        )
    return soft
