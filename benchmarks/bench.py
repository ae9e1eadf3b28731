"""``make bench``: loadbench's speed claims, measured on this machine, side by side in one run.

Prints five sections, each figure next to its target with PASS/MISS (a benchmark, never
a failing build):

1. client CPU per 1,000 SSE events: loadbench (lean transport), loadbench over httpx's own
   transport and a raw asyncio reference client, against a bulk server;
2. client CPU seconds per 1,000 requests (64-token streams, c=64);
3. timing error against a timed server (TTFT 100 ms, ITL 20 ms), as loadbench reports it
   and paired against the server's own write stamps;
4. start-up: spawning ``loadbench run`` until the server parses its first POST;
5. client CPU per 1,000 SSE events over https (lean transport and httpx's pool), against
   plain http on the lean transport, in interleaved rounds against the bulk server behind
   TLS (a throwaway CA from ``trustme``, in the ``dev`` extra).

Every process is a child in its own session, pinned (Linux) with the server on one core
and the client on the other, bounded in time (its own limit, ours, and a total budget),
and killed by pid on the way out, Ctrl-C included. Load goes to 127.0.0.1 only.

    .venv/bin/python benchmarks/bench.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
PY = sys.executable

TTFT_MS = 100.0
ITL_MS = 20.0
TIMED_TOKENS = 64
REQUEST_S = (TTFT_MS + (TIMED_TOKENS - 1) * ITL_MS) / 1000  # one timed request: 1.36 s
TLS_CONC = 64
TLS_TOKENS = 16

# Figures measured by the peers study (../shared/research/peers.md), on this machine.
PEERS_CPU_S_PER_1K = (("vLLM bench", 2.8), ("Locust", 2.5), ("AIPerf", 9.6), ("GuideLLM", 30.0))
PEERS_STARTUP = "AIPerf 14.5 s, GuideLLM 32 s, vLLM bench 33 s"

NOISE_NOTE = (
    "note: a shared 2-core VM; expect ±15-25% noise between runs. Read the figures as\n"
    "ratios: loadbench against the raw client, measured seconds apart on the same cores."
)


@dataclass(frozen=True)
class Plan:
    """What to run; --quick is a smoke-sized copy."""

    concurrency: tuple[int, ...] = (1, 64, 256, 1000)
    tokens: tuple[int, ...] = (16, 256)
    warmup_s: float = 1.0
    window_s: float = 2.5
    requests_window_s: float = 4.0
    timing_concurrency: tuple[int, ...] = (1, 64, 256)
    steady_s: float = 6.0
    phase_locked: bool = True
    startup_trials: int = 3
    tls_rounds: int = 3
    budget_s: float = 450.0


QUICK = Plan(
    concurrency=(64,),
    tokens=(16, 256),
    warmup_s=0.5,
    window_s=1.5,
    requests_window_s=2.0,
    timing_concurrency=(64, 256),
    steady_s=2.5,
    phase_locked=False,
    startup_trials=1,
    tls_rounds=1,
    budget_s=100.0,
)


# -- child processes -------------------------------------------------------------------------


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
    tls: tuple[Path, Path] | None = None,
) -> RefServer:
    ready = tmp / f"server-{mode}.json"
    argv = [PY, str(HERE / "refserver.py"), "--mode", mode, "--ready-file", str(ready)]
    argv += ["--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS), "--max-life-s", str(life_s)]
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


# -- one measurement -------------------------------------------------------------------------


def _cpu_by_process() -> dict[tuple[int, float], float]:
    """CPU seconds so far of every process on the box, keyed by (pid, start time)."""
    out: dict[tuple[int, float], float] = {}
    for proc in psutil.process_iter(["cpu_times", "create_time"]):
        times, created = proc.info["cpu_times"], proc.info["create_time"]
        if times is not None and created is not None:
            out[(proc.pid, created)] = times.user + times.system
    return out


@contextlib.contextmanager
def cpu_watch(server: RefServer, out: dict[str, Any]) -> Iterator[None]:
    """Server CPU and other people's CPU over the block, as % of one core.

    "Other" is every process but ours (this one, its children): what other jobs on the
    box took while we measured. Processes that both start and end inside the block are
    missed, and kernel time spent outside any process (softirq) is not counted.
    """
    wall0 = time.perf_counter()
    before = _cpu_by_process()
    srv0 = server.stats()["cpu_s"]
    yield
    wall = time.perf_counter() - wall0
    srv = server.stats()["cpu_s"] - srv0
    after = _cpu_by_process()
    ours = {os.getpid(), server.proc.pid}
    other = sum(cpu - before.get(key, 0.0) for key, cpu in after.items() if key[0] not in ours)
    out["server_pct"] = round(100 * srv / wall, 1)
    out["other_pct"] = round(100 * max(other, 0.0) / wall, 1)


@dataclass
class Bench:
    plan: Plan
    children: Children
    tmp: Path
    started: float = field(default_factory=time.monotonic)
    cells: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def client(
        self,
        server: RefServer,
        kind: str,
        conc: int,
        tokens: int,
        *,
        section: str,
        warmup: list[str],
        duration_s: float,
        limit_s: float,
        stagger_s: float = 0.0,
        timing: bool = False,
        tls: bool = False,
    ) -> dict[str, Any]:
        """Run one client process for one cell; returns its JSON plus what we watched."""
        cell: dict[str, Any] = {"section": section, "client": kind, "conc": conc, "tokens": tokens}
        cell["tls"] = tls
        if self.elapsed() + duration_s + 3 > self.plan.budget_s:
            cell["error"] = "skipped: over the time budget"
            self.cells.append(cell)
            return cell
        script = "refclient.py" if kind == "raw" else "lbclient.py"
        port = server.tls_port if tls else server.port
        argv = [PY, str(HERE / script), "--port", str(port), "--conc", str(conc)]
        argv += ["--tokens", str(tokens), "--duration-s", str(duration_s), *warmup]
        argv += ["--stagger-s", str(stagger_s), "--max-s", str(int(limit_s) + 5)]
        if kind != "raw":
            argv += ["--transport", kind]
        if timing:
            argv.append("--timing")
        if tls:
            argv += ["--tls", "--ca", str(server.ca)]
        if server.mode == "timed":
            server.reset()
        with cpu_watch(server, cell):
            stdout, stderr, error = self.children.run(argv, self.children.client_core, limit_s)
        if error:
            cell["error"] = error
        else:
            try:
                cell.update(json.loads(stdout.strip().splitlines()[-1]))
                cell["client"] = kind  # the child says "loadbench-lean"; keep our name
            except (ValueError, IndexError):
                cell["error"] = f"no result: {stderr.strip()[-160:]}"
        if "steady_mono_ns" in cell:
            lo, hi = cell["steady_mono_ns"]
            cell["server_lateness_us"] = server.stats((lo, hi))["lateness_us"]
        self.cells.append(cell)
        return cell

    def target(self, name: str, figure: float | None, limit: float, unit: str = "") -> str:
        ok = figure is not None and figure <= limit
        self.targets.append({"target": name, "figure": figure, "limit": limit, "pass": ok})
        shown = "n/a" if figure is None else f"{figure:.2f}{unit}"
        return f"{shown} (≤ {limit:g}{unit}) {'PASS' if ok else 'MISS'}"


def ms_per_1k(cell: dict[str, Any]) -> float | None:
    if cell.get("error") or not cell.get("events"):
        return None
    return float(1e6 * cell["cpu_s"] / cell["events"])


def fmt(x: float | None, width: int, digits: int = 2, suffix: str = "") -> str:
    text = "-" if x is None else f"{x:.{digits}f}{suffix}"
    return text.rjust(width)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or not b else a / b


# -- the sections ----------------------------------------------------------------------------


def _pct_list(row: dict[str, dict[str, Any]], key: str) -> str:
    return "/".join("-" if row[k].get(key) is None else f"{row[k][key]:.0f}" for k in row)


def section_events(b: Bench, server: RefServer) -> None:
    p = b.plan
    print()
    print("1. Client CPU per 1,000 SSE events: bulk server (each response in one write)")
    print(f"   {p.warmup_s:g} s warmup, then {p.window_s:g} s in which workers start requests;")
    print("   CPU (process_time) and events (content events of ok requests) cover that phase")
    print("   until its last request ends. raw: asyncio.Protocol floor; lean: loadbench as")
    print("   shipped; httpx: loadbench --transport httpx (httpx's own connection pool)")
    print(
        f"   {'tok':>4} {'c':>5} | {'raw':>5} {'lean':>6} {'×raw':>5} {'httpx':>7} {'×raw':>5} |"
        f" {'raw':>5} {'lean':>5} {'httpx':>5} | {'srv%':>9} {'other%':>8}"
    )
    print(f"   {'':>4} {'':>5} | {'ms per 1,000 events':^31} | {'k events/s':^17} |")
    warm = ["--warmup-s", str(p.warmup_s)]
    per_tokens: dict[int, dict[int, dict[str, float | None]]] = {}
    for tokens in p.tokens:
        httpx_gave_up = False
        for conc in p.concurrency:
            row: dict[str, dict[str, Any]] = {}
            for kind in ("raw", "lean", "httpx"):
                if kind == "httpx" and httpx_gave_up:
                    row[kind] = {"error": "skipped: it did not finish at 16 tokens"}
                    continue
                row[kind] = b.client(
                    server,
                    kind,
                    conc,
                    tokens,
                    section="events",
                    warmup=warm,
                    duration_s=p.window_s,
                    limit_s=30.0 if conc <= 64 else 45.0,
                )
                if kind == "httpx" and conc >= 1000 and row[kind].get("error"):
                    httpx_gave_up = True
            figs = {k: ms_per_1k(v) for k, v in row.items()}
            per_tokens.setdefault(tokens, {})[conc] = figs
            rate = {
                k: None if figs[k] is None else row[k]["events"] / row[k]["wall_s"] / 1e3
                for k in row
            }
            print(
                f"   {tokens:>4} {conc:>5} | {fmt(figs['raw'], 5)} {fmt(figs['lean'], 6)}"
                f" {fmt(ratio(figs['lean'], figs['raw']), 5, 1, '×')}"
                f" {fmt(figs['httpx'], 7, 1)} {fmt(ratio(figs['httpx'], figs['raw']), 5, 0, '×')} |"
                f" {fmt(rate['raw'], 5, 0)} {fmt(rate['lean'], 5, 0)} {fmt(rate['httpx'], 5, 1)} |"
                f" {_pct_list(row, 'server_pct'):>9} {_pct_list(row, 'other_pct'):>8}"
            )
            for k in ("raw", "lean", "httpx"):
                if row[k].get("error"):
                    print(f"   {'':>12}{k}: {row[k]['error']}")
    print("   srv%, other%: CPU of the server, and of every process that is not ours, during")
    print("   the raw/lean/httpx runs, in % of one core (other% > 0: someone else was busy)")
    for tokens, by_conc in per_tokens.items():
        if 64 not in by_conc:
            continue
        r = ratio(by_conc[64]["lean"], by_conc[64]["raw"])
        verdict = b.target(f"CPU/event: loadbench vs raw at c=64, {tokens} tok", r, 3.0, "×")
        print(f"   target, {tokens} tok: loadbench per event at c=64, ×raw: {verdict}")
        for conc in (256, 1000):
            if conc in by_conc:
                g = ratio(by_conc[conc]["lean"], by_conc[64]["lean"])
                name = f"CPU/event: loadbench c={conc} vs its c=64, {tokens} tok"
                print(
                    f"   target, {tokens} tok: loadbench per event at c={conc}, ×its c=64:"
                    f" {b.target(name, g, 1.25, '×')}"
                )


def section_requests(b: Bench, bulk: RefServer, timed: RefServer) -> None:
    p = b.plan
    print()
    print("2. Client CPU seconds per 1,000 requests: 64-token streams, c=64")
    print(
        f"   bulk server: {p.warmup_s:g} s warmup, then {p.requests_window_s:g} s as in section 1"
    )
    warm = ["--warmup-s", str(p.warmup_s)]
    labels = (("raw", "raw reference"), ("lean", "loadbench"), ("httpx", "loadbench httpx"))
    for kind, label in labels:
        cell = b.client(
            bulk,
            kind,
            64,
            TIMED_TOKENS,
            section="requests",
            warmup=warm,
            duration_s=p.requests_window_s,
            limit_s=30.0,
        )
        per_1k = _per_1k_requests(cell)
        extra = f"   {cell['error']}" if cell.get("error") else ""
        if kind == "lean":
            extra += "   target " + b.target("CPU/request: loadbench s per 1k", per_1k, 1.0, " s")
        print(f"   {label:<16} {fmt(per_1k, 6, 3)} s  ({cell.get('ok', 0):>5} requests){extra}")
    print(
        f"   real-time load: the timed server of section 3 (one write per token, {ITL_MS:g} ms"
        " apart),"
    )
    print(
        f"   streams spread over {REQUEST_S:.2f} s, {p.requests_window_s:g} s steady; no stamp hook"
    )
    realtime: dict[str, float | None] = {}
    for kind, label in labels[:2]:
        cell = b.client(
            timed,
            kind,
            64,
            TIMED_TOKENS,
            section="requests-realtime",
            warmup=["--warmup-each", "1"],
            duration_s=2 * REQUEST_S + p.requests_window_s,
            limit_s=2 * REQUEST_S + p.requests_window_s + 25,
            stagger_s=REQUEST_S,
        )
        realtime[kind] = _per_1k_requests(cell)
        extra = f"   {cell['error']}" if cell.get("error") else ""
        shown = fmt(realtime[kind], 6, 3)
        print(f"   {label:<16} {shown} s  ({cell.get('ok', 0):>5} requests){extra}")
    print("   peers, as measured by the peers study on this machine (not re-run here), against")
    print("   a mock streaming a token every 10 ms (TTFT 50 ms), at c=64:")
    print("   " + " · ".join(f"{name} {v:g} s" for name, v in PEERS_CPU_S_PER_1K))
    lean_rt = realtime.get("lean")
    if lean_rt:
        best_name, best = min(PEERS_CPU_S_PER_1K, key=lambda x: x[1])
        print(
            f"   under real-time load loadbench needs {lean_rt / best:.2f}× the CPU per request of"
            f" the leanest peer ({best_name});"
        )
        print("   the load shapes differ (10 vs 20 ms ITL), so read this as a rough comparison")


def _per_1k_requests(cell: dict[str, Any]) -> float | None:
    per_1k = None
    if not cell.get("error") and cell.get("ok"):
        per_1k = 1e3 * cell["cpu_s"] / cell["ok"]
    cell["cpu_s_per_1k_requests"] = per_1k
    return per_1k


def section_timing(b: Bench, server: RefServer) -> None:
    p = b.plan
    print()
    print(
        f"3. Timing error: timed server, TTFT {TTFT_MS:g} ms, ITL {ITL_MS:g} ms,"
        f" {TIMED_TOKENS} tokens ({REQUEST_S:.2f} s a request)"
    )
    print("   one warmup request per worker; then each worker waits a random")
    print(f"   0..{REQUEST_S:.2f} s (streams spread, not phase-locked) and sends back to back;")
    print(
        f"   paired figures: requests sent in the {p.steady_s:g} s steady window after that ramp,"
    )
    print("   each client stamp against the server's own stamps carried in the stream.")
    print("   reported: percentiles as the client reports them (loadbench: its stage figures),")
    print("   minus the true 100 / 20 ms. loadbench's TTFT runs from its send stamp, so it")
    print("   includes the request's trip to the server (req path) and the first token's way back.")
    print("   loadbench's paired stamps come from a benchmark-only StreamState subclass (and a")
    print("   stagger wrapper); its cpu% here includes that hook, sections 1-2 never do.")
    print(
        f"   {'':<3} {'c':>4} {'req':>4} {'cpu':>4} | {'reported − true, ms':^25} |"
        f" {'paired error, ms':^33} | {'server':^9} |"
    )
    print(
        f"   {'':<3} {'':>4} {'':>4} {'%':>4} | {'TTFT p50/p99':>12} {'ITL p50/p99':>12} |"
        f" {'TTFT p50/p99':>12} {'req-path':>8} {'|ITL|':>5} {'lag':>5} | {'late µs':^9} |"
    )
    print(
        f"   {'':<3} {'':>4} {'':>4} {'':>4} | {'':>12} {'':>12} |"
        f" {'':>12} {'p99':>8} {'p99':>5} {'p99':>5} | {'p50/p99':^9} | target: max p99 error"
    )
    duration = 2 * REQUEST_S + p.steady_s
    rows: list[tuple[str, int, bool]] = [
        (kind, conc, False) for conc in p.timing_concurrency for kind in ("raw", "lean")
    ]
    if p.phase_locked:
        rows += [(kind, 256, True) for kind in ("raw", "lean")]
    limits = {1: 1.0, 64: 1.0, 256: 3.0}
    for kind, conc, locked in rows:
        cell = b.client(
            server,
            kind,
            conc,
            TIMED_TOKENS,
            section="timing-phase-locked" if locked else "timing",
            warmup=["--warmup-each", "1"],
            duration_s=p.steady_s if locked else duration,
            limit_s=duration + 25,
            stagger_s=0.0 if locked else REQUEST_S,
            timing=True,
        )
        name = "lb" if kind == "lean" else "raw"
        shown_c = f"{conc}*" if locked else str(conc)
        if cell.get("error"):
            print(f"   {name:<3} {shown_c:>4}  {cell['error']}")
            continue
        rep, pair = cell["reported"], cell["paired"]
        late = cell["server_lateness_us"]
        cpu_pct = 100 * cell["cpu_s"] / cell["wall_s"]
        cell["cpu_s_per_1k_requests"] = 1e3 * cell["cpu_s"] / cell["ok"] if cell["ok"] else None
        ttft_err, itl_abs = pair["ttft_err_ms"], pair["itl_abs_err_ms"]
        if not ttft_err["n"]:
            print(f"   {name:<3} {shown_c:>4}  no paired requests")
            continue
        worst = max(ttft_err["p99"], itl_abs["p99"] or 0.0)
        if kind == "lean" and conc in limits and not locked:
            name_t = f"timing: loadbench p99 error at c={conc}"
            verdict = b.target(name_t, worst, limits[conc], " ms")
        else:
            verdict = f"{worst:.2f} ms"
        if kind == "lean" and cell.get("client_health", {}).get("bottleneck"):
            verdict += " (loadbench flagged itself)"
        print(
            f"   {name:<3} {shown_c:>4} {pair['requests']:>4} {cpu_pct:>4.0f} |"
            f" {_less(rep['ttft_ms'], TTFT_MS):>12} {_less(rep['itl_ms'], ITL_MS):>12} |"
            f" {ttft_err['p50']:>5.2f}/{ttft_err['p99']:<6.2f} {pair['req_path_ms']['p99']:>8.2f}"
            f" {itl_abs['p99']:>5.2f} {pair['event_lag_ms']['p99']:>5.2f} |"
            f" {late['p50'] or 0:>4.0f}/{late['p99'] or 0:<4.0f} | {verdict}"
        )
    hooks = [c["hook_ns_per_token"] for c in b.cells if c.get("hook_ns_per_token")]
    if hooks:
        hook_us = sorted(hooks)[len(hooks) // 2] / 1000
        print(f"   the stamp hook costs loadbench {hook_us:.1f} µs of CPU per token (measured in")
        print("   its process): lb's timing figures here are, if anything, pessimistic")
    print("   lb: loadbench (lean transport); req: paired requests; lag: client stamp − server")
    print("   write, per token; server late: its own write − schedule, per token (timerfd)")
    if p.phase_locked:
        print("   *: phase-locked, every stream starting together (what a batching server emits):")
        print("   each request's end and the next send land in the same instant for all streams")


def _less(x: dict[str, Any], base: float) -> str:
    if x.get("p50") is None:
        return "-"
    return f"{x['p50'] - base:+.2f}/{x['p99'] - base:+.2f}"


def section_startup(b: Bench, server: RefServer) -> None:
    p = b.plan
    print()
    print("4. Start-up: spawning `loadbench run <scenario> -q -o <file>` until the server")
    print("   parses its first POST (the CLI probes GET /v1/models first); 1 request, c=1")
    exe = Path(PY).with_name("loadbench.exe" if os.name == "nt" else "loadbench")
    found = str(exe) if exe.exists() else shutil.which("loadbench")
    if found is None:
        print("   loadbench's console script not found next to this Python; skipped")
        return
    scenario = b.tmp / "startup.toml"
    scenario.write_text(
        f'name = "bench-startup"\n[target]\nbase_url = "http://127.0.0.1:{server.port}/v1"\n'
        '[[models]]\nname = "bench-model"\n[prompts]\nitems = ["Say hello."]\n'
        "[request]\nmax_tokens = 16\n[load]\nconcurrency = [1]\nrequests = 1\nwarmup = 0\n"
    )
    trials: list[float] = []
    totals: list[float] = []
    for i in range(p.startup_trials):
        server.reset()
        argv = [found, "run", str(scenario), "-q", "-o", str(b.tmp / f"startup-{i}.json")]
        spawned = time.monotonic_ns()
        _, _, error = b.children.run(argv, b.children.client_core, 30.0)
        total = (time.monotonic_ns() - spawned) / 1e9
        first = server.stats()["first_post_ns"]
        if error or not first:
            print(f"   trial {i + 1}: {error or 'no POST reached the server'}")
            continue
        trials.append((first - spawned) / 1e9)
        totals.append(total)
    b.cells.append({"section": "startup", "to_first_post_s": trials, "process_wall_s": totals})
    if not trials:
        return
    median = sorted(trials)[len(trials) // 2]
    print("   to first POST: " + ", ".join(f"{t:.3f}" for t in trials) + " s")
    print("   whole process (request, result file, summary, exit): ", end="")
    print(", ".join(f"{t:.2f}" for t in totals) + " s")
    print(
        "   median to first POST: " + b.target("start-up: to first POST, median", median, 0.5, " s")
    )
    print("   peers take 14-33 s from launch to load, measured by the peers study:")
    print(f"   {PEERS_STARTUP}")


def section_tls(b: Bench, server: RefServer) -> None:
    p = b.plan
    print()
    print(
        f"5. https: client CPU per 1,000 SSE events, c={TLS_CONC}, {TLS_TOKENS}-token streams,"
        " bulk server"
    )
    if not server.tls_port:
        print("   skipped: trustme (in the dev extra) is not installed, so there is no certificate")
        return
    print("   the bulk server of section 1, also listening with TLS (a throwaway trustme CA that")
    print("   the clients trust through SSL_CERT_FILE: chain and host name checked). https lean:")
    print("   loadbench as shipped; https httpx: --transport httpx (httpx's own pool); http lean:")
    print(f"   plain http, the reference. {p.tls_rounds} round(s), each running the three in turn")
    print(
        f"   (the order rotates), each as in section 1: {p.warmup_s:g} s warmup, {p.window_s:g} s"
    )
    print("   window; figures: the median over the rounds")
    print(
        f"   {'':<11} | {'ms/1k ev':>8} {'×http':>6} | {'k ev/s':>6} |"
        f" {'srv%':>11} {'other%':>11} | ms per 1,000 events, each round"
    )
    rows = (
        ("https lean", "lean", True),
        ("https httpx", "httpx", True),
        ("http lean", "lean", False),
    )
    cells: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in rows}
    for r in range(p.tls_rounds):
        for name, kind, tls in rows[r % 3 :] + rows[: r % 3]:
            cell = b.client(
                server,
                kind,
                TLS_CONC,
                TLS_TOKENS,
                section="tls",
                warmup=["--warmup-s", str(p.warmup_s)],
                duration_s=p.window_s,
                limit_s=30.0,
                tls=tls,
            )
            cell["round"] = r + 1
            cells[name].append(cell)

    def median(xs: list[float]) -> float | None:
        return statistics.median(xs) if xs else None

    figs = {name: [f for f in map(ms_per_1k, got) if f is not None] for name, got in cells.items()}
    med = {name: median(f) for name, f in figs.items()}
    for name, got in cells.items():
        done = [c for c in got if ms_per_1k(c) is not None]
        rate = median([c["events"] / c["wall_s"] / 1e3 for c in done])
        srv, other = (
            "/".join(f"{c[k]:.0f}" for c in done) or "-" for k in ("server_pct", "other_pct")
        )
        x_http = ratio(med[name], med["http lean"])
        each = ", ".join(f"{x:.2f}" for x in figs[name])
        print(
            f"   {name:<11} | {fmt(med[name], 8)} {fmt(x_http, 6, 2, '×')} |"
            f" {fmt(rate, 6, 1)} | {srv:>11} {other:>11} | {each}"
        )
        for c in got:
            if c.get("error"):
                print(f"   {'':>14}round {c['round']}: {c['error']}")
    print("   srv%, other%: as in section 1, one figure per round")
    r = ratio(med["https lean"], med["http lean"])
    name = f"CPU/event: loadbench https vs http at c={TLS_CONC}, {TLS_TOKENS} tok"
    verdict = b.target(name, r, 1.5, "×")
    print(f"   target: https per event on the lean transport, ×plain http: {verdict}")


# -- main --------------------------------------------------------------------------------------


def header(b: Bench, quick: bool) -> dict[str, Any]:
    try:
        uv = f"uvloop {importlib.metadata.version('uvloop')} (server and clients)"
    except importlib.metadata.PackageNotFoundError:
        uv = "uvloop not installed: asyncio's default loop"
    from loadbench import __version__

    c = b.children
    cpu_name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    if c.pin:
        affinity = (
            f"server pinned to core {c.server_core}, clients to core {c.client_core} "
            "(os.sched_setaffinity)"
        )
    elif hasattr(os, "sched_setaffinity"):
        affinity = "not pinned (fewer than 2 usable cores, or --no-pin)"
    else:
        affinity = f"not pinned: os.sched_setaffinity does not exist on {platform.system()}"
    prio = "server and clients at nice -20 (+ autogroup -20)" if c.prio else "normal priority"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    facts = {
        "cpus": os.cpu_count(),
        "cpu": cpu_name,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "loop": uv,
        "loadbench": __version__,
        "affinity": affinity,
        "priority": prio,
        "loadavg_start": load,
        "quick": quick,
    }
    print(
        f"loadbench {__version__} make bench{' --quick' if quick else ''}: client overhead,"
        " timing error, start-up and https, against 127.0.0.1 only"
    )
    print(f"machine: {os.cpu_count()} CPUs ({cpu_name}), {facts['os']}, Python {facts['python']}")
    print(f"event loop: {uv}")
    print(f"affinity: {affinity}")
    print(f"priority: {prio}")
    print(f"load average at start: {load}")
    print(NOISE_NOTE)
    return facts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a reduced matrix, about a minute")
    ap.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    ap.add_argument("--no-prio", action="store_true", help="do not raise children's priority")
    args = ap.parse_args()
    plan = QUICK if args.quick else Plan()

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, kill and a closed terminal all end here, then in the `finally` below.
    # SIGINT is set too, because a shell starts background jobs with it ignored.
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    children = Children(pin=not args.no_pin, prio=not args.no_prio)
    status = 0
    with tempfile.TemporaryDirectory(prefix="loadbench-bench-") as tmp:
        b = Bench(plan, children, Path(tmp))
        facts = header(b, args.quick)
        try:
            life = plan.budget_s + 120
            bulk = start_server(children, "bulk", b.tmp, life, tls_files(b.tmp))
            timed = start_server(children, "timed", b.tmp, life)
            section_events(b, bulk)
            section_requests(b, bulk, timed)
            section_timing(b, timed)
            children.stop(timed.proc)
            section_startup(b, bulk)
            section_tls(b, bulk)
        except KeyboardInterrupt:
            print("\ninterrupted: every child process stopped", file=sys.stderr)
            status = 130
        finally:
            children.stop_all()
        print()
        passed = sum(t["pass"] for t in b.targets)
        print(f"targets: {passed}/{len(b.targets)} PASS")
        for t in b.targets:
            print(f"   {'PASS' if t['pass'] else 'MISS'}  {t['target']}")
        load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
        print(f"done in {b.elapsed():.0f} s; load average at the end: {load}")
        if args.json:
            doc = {"machine": facts, "plan": asdict(plan), "cells": b.cells, "targets": b.targets}
            Path(args.json).write_text(json.dumps(doc, indent=1, default=str) + "\n")
            print(f"figures written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
