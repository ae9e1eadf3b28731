"""Builds the exact-timing C server (``sse_server.c`` here) once, into a cache directory.

``cc -O2`` (or ``$CC``) into ``$XDG_CACHE_HOME/loadbench/cserver`` (default
``~/.cache/loadbench/cserver``), named by a hash of the source and the compiler, so an edit
rebuilds and an unchanged source is reused. Linux only (epoll, ``epoll_pwait2``: glibc
2.35+). :func:`build` returns the binary's path, or raises :class:`Unavailable` saying why.

    .venv/bin/python benchmarks/cserver/build.py     # prints the binary's path
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "sse_server.c"


class Unavailable(RuntimeError):
    """The C server cannot be built here; the message says why."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "loadbench" / "cserver"


def build() -> Path:
    if not sys.platform.startswith("linux"):
        raise Unavailable(f"the C server uses epoll (Linux only), not {sys.platform}")
    asked = os.environ.get("CC")
    cc = shutil.which(asked) if asked else shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise Unavailable(f"no C compiler: {asked!r} (CC) not found" if asked else "no cc or gcc")
    digest = hashlib.sha256(SOURCE.read_bytes() + cc.encode()).hexdigest()[:12]
    out = cache_dir() / f"sse_server-{digest}"
    if out.is_file() and os.access(out, os.X_OK):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        partial = Path(tmp) / "sse_server"
        try:
            done = subprocess.run(
                [cc, "-O2", "-o", str(partial), str(SOURCE)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"{cc} -O2 {SOURCE.name}: {exc}") from exc
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            raise Unavailable(f"{cc} -O2 {SOURCE.name} failed: {last[:200]}")
        partial.replace(out)  # atomic: a concurrent build leaves one whole binary
    return out


if __name__ == "__main__":
    try:
        print(build())
    except Unavailable as exc:
        print(f"cannot build the C server: {exc}", file=sys.stderr)
        sys.exit(1)
