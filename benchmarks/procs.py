"""The bench's child processes and its reference server: started pinned, killed by pid.

Every child runs in its own session, pinned (Linux) with the server on one core and the
client on the other, reniced where allowed, dies with us (PR_SET_PDEATHSIG) and is killed
by pid on the way out, so an interrupted bench leaves nothing running.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PY = sys.executable


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


class Children:
    """Every child: its own session, pinned, reniced where allowed, killed by pid at the end."""

    _PR_SET_PDEATHSIG = 1

    def __init__(self, *, pin: bool, prio: bool) -> None:
        allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.pin = pin and hasattr(os, "sched_setaffinity") and len(allowed) >= 2
        self.server_core = allowed[0] if self.pin else None
        self.client_core = allowed[1] if self.pin else None
        self.prio = prio and os.name == "posix" and hasattr(os, "geteuid") and os.geteuid() == 0
        self._libc = _libc()
        self.live: dict[int, subprocess.Popen[bytes]] = {}

    def _setup(self, core: int | None) -> Callable[[], None] | None:
        if os.name != "posix":
            return None
        libc, prio = self._libc, self.prio

        def setup() -> None:  # runs in the child between fork and exec
            if core is not None:
                os.sched_setaffinity(0, {core})
            if libc is not None:  # die with us, even if we are SIGKILLed
                libc.prctl(self._PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if prio:
                with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as f:
                    f.write("-20")
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, 0, -20)

        return setup

    def start(self, argv: list[str], core: int | None, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=self._setup(core),  # we run no threads
            **kwargs,
        )
        self.live[proc.pid] = proc
        return proc

    def run(self, argv: list[str], core: int | None, limit_s: float) -> tuple[str, str, str]:
        """(stdout, stderr, error): error is "" or why the child gave no result."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = self.start(argv, core, stdout=out, stderr=err)
            error = ""
            try:
                proc.wait(limit_s)
            except subprocess.TimeoutExpired:
                error = f"did not finish within {limit_s:.0f} s"
            finally:
                self.stop(proc)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
            if not error and proc.returncode != 0:
                last = stderr.strip().splitlines()[-1:] or [""]
                error = f"exit code {proc.returncode}: {last[0][:160]}"
            return stdout, stderr, error

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill the child (and its session) by pid, then reap it."""
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                if os.name == "posix":
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self.live.pop(proc.pid, None)

    def stop_all(self) -> None:
        for proc in list(self.live.values()):
            self.stop(proc)


# -- the reference server --------------------------------------------------------------------

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class RefServer:
    mode: str
    port: int  # plain http; /stats and /reset are asked here
    proc: subprocess.Popen[bytes]
    tls_port: int = 0  # the same server behind TLS (started with a certificate), else 0
    ca: Path | None = None  # the CA the clients trust for tls_port

    def call(self, method: str, path: str) -> dict[str, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        if method == "POST":
            req.data = b""
        with _NO_PROXY.open(req, timeout=10) as resp:
            data: dict[str, Any] = json.load(resp)
            return data

    def stats(self, window: tuple[int, int] | None = None) -> dict[str, Any]:
        query = f"?since={window[0]}&until={window[1]}" if window else ""
        return self.call("GET", "/stats" + query)

    def reset(self) -> None:
        self.call("POST", "/reset")


def tls_files(tmp: Path) -> tuple[Path, Path] | None:
    """(CA certificate, server key + chain for 127.0.0.1) from a throwaway CA; None without
    trustme."""
    try:
        import trustme
    except ImportError:
        return None
    ca = trustme.CA()
    ca_pem, server_pem = tmp / "ca.pem", tmp / "server.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    return ca_pem, server_pem


def start_server(
    children: Children,
    mode: str,
    tmp: Path,
    life_s: float,
    *,
    ttft_ms: float,
    itl_ms: float,
    tls: tuple[Path, Path] | None = None,
) -> RefServer:
    ready = tmp / f"server-{mode}.json"
    argv = [PY, str(HERE / "refserver.py"), "--mode", mode, "--ready-file", str(ready)]
    argv += ["--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms), "--max-life-s", str(life_s)]
    if tls is not None:
        argv += ["--cert", str(tls[1])]
    log = (tmp / f"server-{mode}.log").open("wb")
    proc = children.start(argv, children.server_core, stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            children.stop(proc)
            tail = (tmp / f"server-{mode}.log").read_text(errors="replace")[-500:]
            raise RuntimeError(f"the {mode} reference server did not start: {tail}")
        time.sleep(0.02)
    facts = json.loads(ready.read_text())
    tls_port = int(facts.get("tls_port", 0))
    return RefServer(mode, int(facts["port"]), proc, tls_port, tls[0] if tls_port and tls else None)
