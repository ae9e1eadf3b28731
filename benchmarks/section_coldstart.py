"""Cold-start timing error: the first wave of a closed-loop stage, connections pre-opened or not.

Two exact-timing servers (TTFT 100 ms, ITL 20 ms, 32 tokens), side by side in one run:

- ``sim``: loadbench's own simulator in a child process (jitter 0, a slot for every
  stream, no batch slowdown). Python: it parses the whole first wave on one event loop.
- ``c``: the single-threaded epoll C server (``cserver/sse_server.c``, from the project's
  client-limits research), built once with ``cc -O2`` (``cserver/build.py``). It stamps
  every token chunk with its CLOCK_MONOTONIC write time ``t`` (the first also with ``r``,
  when it parsed the request), and prints its own lateness against its schedule on SIGTERM.

Each cell starts a fresh server, sends one warm-up request, then a stage of ``c`` requests
on ``c`` workers: every request is in the first wave, and without pre-opening each of them
opens its own connection on one event loop. Rounds alternate the servers, so both see the
same box, and each cell starts from a collected heap (``gc.collect()``), so no earlier
cell's garbage is collected inside it. Reported per server, concurrency and pre-opening
(median over rounds):

- TTFT / ITL: the stage's p99 minus the truth, as loadbench reports it;
- outside: TTFT p99 less the server's own parse-to-first-token time (sim: its llama.cpp
  ``timings.prompt_ms``; c: its stamps ``t1 - r``), i.e. what the client (and, for the
  simulator, its parsing) added;
- srv late: p99 of the server's own first-token lateness (parse-to-first-token - TTFT):
  a server that wakes up late makes it, not the client;
- c only, from the paired stamps (``stamps.py``): req path p99 (client send stamp -> server
  parsed), ITL/srv p99 (client gap - the server's real gap between the same writes), and
  lag / last: p99 of the event lag (client stamp - server write) over each stream's tokens
  but its last two, and over its final token (a wave's streams end together, so their
  endings can hold up each other's final reads);
  tok late: the server's own p99 lateness over every token it wrote (its SIGTERM report,
  warm-up included);
- paid / open / conn: requests that opened a connection inside the window, connections
  pre-opened before it, and the connect histogram's p50 (ms);
- spread: first to last send stamp of the wave (ms): how long the client took to put the
  ``c`` requests on the wire (each request's stopwatch starts at its own send, so this is
  no TTFT error, but the server sees the wave arrive over that time, not at once).

For the C server each round runs the cell twice, on two fresh servers: loadbench as it is
(TTFT, ITL, tok late, connects), then with a StreamState subclass that keeps the stamps, as
``lbclient.py --timing`` does (outside, srv late, req path, ITL/srv); the hook costs the
client ~2 µs per event, so it stays out of the headline. As ``bench.py`` runs its children,
server and client are pinned to one core each (Linux, 2+ cores; ``--no-pin`` to share) and,
as root, run at nice -20 (``--no-prio``); the client's own affinity and priority are put
back after each cell. The load average and the CPU other processes used meanwhile are
printed with the table: on a shared box they move the figures.

    .venv/bin/python benchmarks/section_coldstart.py [--rounds N] [--concurrency 64 256]
        [--server sim|c|both] [--no-pin] [--no-prio]

From ``bench.py``: ``section_coldstart.main([])`` (it prints its own table).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import anyio
from cserver.build import Unavailable, build
from harness import loadavg, median
from lbclient import CURRENT_STREAM, StampedStreamState
from procs import Children
from stamps import StampedRequest, clock_offset_ns, summary_ms, timing_errors

import loadbench.http.client
from loadbench.http.client import LoadClient
from loadbench.records import RequestRecord
from loadbench.run.engine import RunState, run_stage
from loadbench.run.plan import StagePlan, plan_stages
from loadbench.scenario.model import Api, Arrival, LoadMode, LoadSpec, RequestSpec, Scenario, Target
from loadbench.sim.server import SimConfig, simulator_process

TTFT_MS, ITL_MS, TOKENS = 100.0, 20.0, 32
TRUTH = (TTFT_MS, ITL_MS, TOKENS)  # what an exact server does; the test uses a faster one
# The targets: TTFT and ITL p99 within this many ms of the truth, pre-opened.
TARGET_MS = {64: 2.0, 256: 5.0}
_MODEL = "sim-model"
_SERVERS = ("sim", "c")
# Figures that are a median over rounds (None where a server does not give them).
_MEDIANS = (
    "ttft_err",
    "itl_err",
    "outside",
    "srv_late",
    "req_path",
    "itl_vs_srv",
    "tok_late",
    "spread",
    "lag_mid",
    "lag_last",
)
_MEDIANS_C = ("paired_ttft_err", "paired_itl_err")


_PLAIN_STATE = loadbench.http.client.StreamState


class _StampedClient(LoadClient):
    """Benchmark-only: keeps each ok request's paired stamps (client and server)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stamped: list[StampedRequest] = []

    async def execute(self, **kwargs: Any) -> RequestRecord:  # whatever the engine passes
        rec = await super().execute(**kwargs)
        state = CURRENT_STREAM.get(None)
        if rec.ok and not rec.warmup and state is not None and state.token_ns:
            self.stamped.append(
                StampedRequest(rec.sent_ns, rec.token_ns, state.server_r, state.server_t)
            )
        return rec


@contextlib.contextmanager
def _stamps_read() -> Iterator[None]:
    """Swaps the client's StreamState for the stamp-keeping one (C cells only: the
    simulator's events carry no stamps)."""
    loadbench.http.client.StreamState = StampedStreamState  # type: ignore[misc]
    try:
        yield
    finally:
        loadbench.http.client.StreamState = _PLAIN_STATE


def _scenario(base_url: str, concurrency: int, tokens: int = TOKENS) -> Scenario:
    load = LoadSpec(
        mode=LoadMode.CONCURRENCY,
        concurrency=(concurrency,),
        rate=(),
        arrival=Arrival.CONSTANT,
        burstiness=1.0,
        max_concurrency=None,
        requests=concurrency,
        duration_s=None,
        warmup=1,
        seed=1,
    )
    return Scenario(
        name="coldstart",
        path="<benchmarks/section_coldstart.py>",
        target=Target(base_url, Api.CHAT, None, 60.0, None),
        models=(_MODEL,),
        prompts=("Say hello.",),
        prompts_file=None,
        request=RequestSpec(tokens, None, True, MappingProxyType({})),
        load=load,
    )


def _p99_ms(values_ns: list[int]) -> float | None:
    p99 = summary_ms(values_ns)["p99"]
    return None if p99 is None else float(p99)


async def _cell(
    base_url: str,
    concurrency: int,
    preconnect: bool,
    stamped: bool,
    truth: tuple[float, float, int] = TRUTH,
) -> dict[str, Any]:
    ttft_ms, itl_ms, tokens = truth
    s = _scenario(base_url, concurrency, tokens)
    (plan,) = plan_stages(s)
    options: dict[str, Any] = dict(
        base_url=base_url,
        api=s.target.api,
        spec=s.request,
        timeout_s=s.target.timeout_s,
        max_connections=concurrency,
        preconnect=preconnect,
    )
    client = _StampedClient(**options) if stamped else LoadClient(**options)
    measured: list[RequestRecord] = []

    def keep(_: StagePlan, rec: RequestRecord) -> None:
        if not rec.warmup and rec.ok:
            measured.append(rec)

    async with client:
        stage = await run_stage(plan, s.prompts, client, RunState(), on_record=keep)
    fig = stage.figures
    lat = fig.latency_ms
    connect = lat.get("connect")
    outside = lat.get("ttft_outside_prefill")
    out: dict[str, Any] = {
        "ok": fig.ok,
        "failed": fig.failed,
        "ttft_err": lat["ttft"].p99 - ttft_ms,
        "itl_err": lat["itl"].p99 - itl_ms,
        "outside": outside.p99 if outside is not None and outside.count else None,
        "srv_late": None,
        "req_path": None,
        "itl_vs_srv": None,
        "tok_late": None,
        "lag_mid": None,
        "lag_last": None,
        "preopened": fig.preopened or 0,
        "paid": fig.opened or 0,
        "connect_p50": connect.p50 if connect is not None and connect.count else None,
    }
    sent = [r.sent_ns for r in measured]
    out["spread"] = (max(sent) - min(sent)) / 1e6 if sent else None
    prefill = [r.server_prefill_us for r in measured if r.server_prefill_us is not None]
    if prefill:  # the simulator's own first-token lateness: prompt_ms - TTFT
        out["srv_late"] = _p99_ms([us * 1000 - int(ttft_ms * 1e6) for us in prefill])
    if isinstance(client, _StampedClient):
        pairs = client.stamped
        offset = clock_offset_ns()
        paired = timing_errors(pairs, offset)
        out["outside"] = paired["ttft_err_ms"]["p99"]  # type: ignore[index]
        out["req_path"] = paired["req_path_ms"]["p99"]  # type: ignore[index]
        out["itl_vs_srv"] = paired["itl_err_ms"]["p99"]  # type: ignore[index]
        late = [p.server_t_ns[0] - p.server_r_ns - int(ttft_ms * 1e6) for p in pairs]
        out["srv_late"] = _p99_ms(late)
        out["unpaired"] = paired["unpaired"]
        # Event lag (client stamp - server write) of each stream's final token, against
        # the tokens before its last two: where a wave's ITL error sits.
        last = [p.token_ns[-1] - (p.server_t_ns[-1] - offset) for p in pairs if p.token_ns]
        mid = [
            p.token_ns[k] - (p.server_t_ns[k] - offset)
            for p in pairs
            for k in range(len(p.token_ns) - 2)
            if len(p.server_t_ns) == len(p.token_ns)
        ]
        out["lag_mid"], out["lag_last"] = _p99_ms(mid), _p99_ms(last)
    return out


def _backend() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def _place(pid: int, core: int | None, prio: bool) -> None:
    """Every thread of ``pid`` on ``core`` (threads started later inherit it), at nice -20
    when ``prio`` (the simulator is started by loadbench, not by ``Children``)."""
    tasks = Path(f"/proc/{pid}/task")
    tids = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [pid]
    for tid in tids:
        with contextlib.suppress(OSError):
            if core is not None:
                os.sched_setaffinity(tid, {core})
            if prio:
                os.setpriority(os.PRIO_PROCESS, tid, -20)


def _autogroup(value: int) -> int | None:
    """Sets this session's autogroup nice (Linux, root); returns the one it had."""
    path = Path("/proc/self/autogroup")
    try:
        before = int(path.read_text().split("nice")[1])
        path.write_text(str(value))
    except (OSError, ValueError, IndexError):
        return None
    return before


@contextlib.contextmanager
def _client_on(core: int | None, prio: bool) -> Iterator[None]:
    """This process on ``core`` (and at nice -20 when ``prio``) for the block; its own
    affinity and priority back afterwards, so a caller (``bench.py``) goes on as it was."""
    affinity = os.sched_getaffinity(0) if core is not None else None
    nice = os.getpriority(os.PRIO_PROCESS, 0) if prio else None
    group = _autogroup(-20) if prio else None
    try:
        if core is not None:
            os.sched_setaffinity(0, {core})
        if prio:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, 0, -20)
        yield
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
        if nice is not None:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, 0, nice)
        if group is not None:
            _autogroup(group)


@dataclass
class CServer:
    base_url: str
    proc: subprocess.Popen[bytes]
    report: dict[str, Any]  # its own lateness figures, filled in when it stops


@contextlib.contextmanager
def c_server(
    binary: Path, children: Children, truth: tuple[float, float, int] = TRUTH
) -> Iterator[CServer]:
    """The C server on a free port of 127.0.0.1; SIGTERM at the end for its own report."""
    ttft_ms, itl_ms, tokens = truth
    argv = [str(binary), "0", str(tokens), str(int(ttft_ms * 1000)), str(int(itl_ms * 1000))]
    with tempfile.TemporaryFile() as log:
        proc = children.start(argv, children.server_core, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 10
            port = 0
            while not port:
                log.seek(0)
                for line in log.read().decode("utf-8", "replace").splitlines():
                    if "listening 127.0.0.1:" in line:
                        port = int(line.split("listening 127.0.0.1:")[1].split()[0])
                if port:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read()[-500:].decode("utf-8", "replace")
                    raise RuntimeError(f"the C server did not start: {tail}")
                time.sleep(0.005)
            server = CServer(f"http://127.0.0.1:{port}/v1", proc, {})
            yield server
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGTERM)  # by pid: it prints its report and exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            log.seek(0)
            for line in log.read().decode("utf-8", "replace").splitlines():
                if line.startswith('{"server":"c"'):
                    server.report = json.loads(line)
        finally:
            children.stop(proc)


def _run_cell(
    kind: str, binary: Path | None, children: Children, c: int, preconnect: bool
) -> dict[str, Any]:
    gc.collect()  # each cell from a clean heap: no earlier cell's garbage collected in it
    with _client_on(children.client_core, children.prio):
        if kind == "sim":
            config = SimConfig(
                ttft_ms=TTFT_MS,
                itl_ms=ITL_MS,
                jitter=0.0,
                slots=max(c, 8),
                batch_itl_factor=0.0,
                max_tokens_default=TOKENS,
                seed=1,
            )
            with simulator_process(config) as sim:  # fresh: nothing warm on either side
                _place(sim.pid, children.server_core, children.prio)
                return anyio.run(
                    _cell, sim.base_url, c, preconnect, False, backend_options=_backend()
                )
        assert binary is not None
        # The headline figures from loadbench as it is; the split from a second fresh server
        # with the stamp hook in (it costs the client ~2 µs per event, so it stays out of
        # the headline).
        with c_server(binary, children) as srv:
            out = anyio.run(_cell, srv.base_url, c, preconnect, False, backend_options=_backend())
        late_us = srv.report.get("late_us_p99")
        out["tok_late"] = late_us / 1000 if isinstance(late_us, int) else None
        gc.collect()
        with _stamps_read(), c_server(binary, children) as srv:
            paired = anyio.run(_cell, srv.base_url, c, preconnect, True, backend_options=_backend())
        for key in (
            "outside",
            "srv_late",
            "req_path",
            "itl_vs_srv",
            "unpaired",
            "lag_mid",
            "lag_last",
        ):
            out[key] = paired[key]
        out["paired_ttft_err"], out["paired_itl_err"] = paired["ttft_err"], paired["itl_err"]
        return out


def _median(cells: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(cells[-1])
    for key in _MEDIANS + (_MEDIANS_C if "paired_ttft_err" in out else ()):
        out[key] = median([c[key] for c in cells])
    out["failed"] = sum(c["failed"] for c in cells)
    return out


def _fmt(value: float | None, width: int, sign: bool = True) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>+{width}.2f}" if sign else f"{value:>{width}.2f}"


def _busy_s() -> float | None:
    """CPU seconds the whole box has been busy (every process), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_s() -> float:
    """CPU seconds of this process and its reaped children (every server it started)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="fresh servers per cell (median)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    p.add_argument(
        "--server",
        choices=["sim", "c", "both"],
        default="both",
        help="the simulator, the C server, or both side by side (default; sim alone without cc)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    p.add_argument("--no-prio", action="store_true", help="do not raise their priority (root)")
    args = p.parse_args(argv)
    kinds = list(_SERVERS) if args.server == "both" else [args.server]
    binary: Path | None = None
    if "c" in kinds:
        try:
            binary = build()
        except Unavailable as exc:
            print(f"\ncold start: the C server is skipped: {exc}")
            kinds.remove("c")
    if not kinds:
        return []
    children = Children(pin=not args.no_pin, prio=not args.no_prio)
    pinned = (
        f"server on core {children.server_core}, client on core {children.client_core}"
        if children.pin
        else "not pinned"
    ) + (", both at nice -20" if children.prio else "")
    print()
    print(
        f"cold start: timing error of a stage's first wave against exact-timing servers"
        f" (TTFT {TTFT_MS:g} ms, ITL {ITL_MS:g} ms, {TOKENS} tokens), 1 warm-up request,"
    )
    print(
        f"   median of {args.rounds} rounds, each on a fresh server, servers alternating; {pinned};"
        f" client loop {'uvloop' if _backend() else 'asyncio'}; error = p99 - truth, ms;"
        f" load average {loadavg()} at the start"
    )
    head = (
        f"   {'server':>6} {'c':>4} {'pre-open':>8} | {'TTFT':>7} {'ITL':>7} | {'outside':>7}"
        f" {'srv late':>8} {'req path':>8} {'ITL/srv':>7} {'lag':>5} {'last':>5} {'tok late':>8} |"
        f" {'paid':>4} {'open':>4} {'conn':>5} {'spread':>6} | target"
    )
    print(head)
    rows = []
    busy0, own0, wall0 = _busy_s(), _own_s(), time.monotonic()
    try:
        for c in args.concurrency:
            for preconnect in (False, True):
                cells: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
                for _ in range(args.rounds):
                    for kind in kinds:
                        cells[kind].append(_run_cell(kind, binary, children, c, preconnect))
                for kind in kinds:
                    m = _median(cells[kind])
                    target = TARGET_MS.get(c)
                    verdict = ""
                    if preconnect and target is not None:
                        worst = max(m["ttft_err"], m["itl_err"])
                        verdict = f"{'PASS' if worst <= target else 'MISS'} ≤ {target:g}"
                    conn = _fmt(m["connect_p50"], 5, sign=False)
                    print(
                        f"   {kind:>6} {c:>4} {'on' if preconnect else 'off':>8} |"
                        f" {_fmt(m['ttft_err'], 7)} {_fmt(m['itl_err'], 7)} |"
                        f" {_fmt(m['outside'], 7)} {_fmt(m['srv_late'], 8)}"
                        f" {_fmt(m['req_path'], 8)} {_fmt(m['itl_vs_srv'], 7)}"
                        f" {_fmt(m['lag_mid'], 5, sign=False)} {_fmt(m['lag_last'], 5, sign=False)}"
                        f" {_fmt(m['tok_late'], 8)} |"
                        f" {m['paid']:>4} {m['preopened']:>4} {conn}"
                        f" {_fmt(m['spread'], 6, sign=False)} | {verdict}"
                    )
                    if m["failed"]:
                        print(f"   {kind} c={c}: {m['failed']} request(s) failed")
                    rows.append(
                        {
                            "server": kind,
                            "concurrency": c,
                            "preconnect": preconnect,
                            "target_ms": target,
                            **m,
                        }
                    )
    finally:
        children.stop_all()
    busy1, own1, wall = _busy_s(), _own_s(), time.monotonic() - wall0
    others = (
        f"; other processes used {max(busy1 - busy0 - (own1 - own0), 0.0) / wall:.2f} cores"
        f" on average over the {wall:.0f} s"
        if busy0 is not None and busy1 is not None
        else ""
    )
    print(f"   load average {loadavg()} at the end{others}")
    print("   outside: TTFT p99 less the server's own parse-to-first-token time; srv late: the")
    print(
        "   server's first-token lateness p99, by its own clock; c only, from a second run of the"
    )
    print("   cell with the stamp hook: req path (client send -> server parsed) p99, ITL/srv")
    print("   (client gap - server gap) p99, lag / last: p99 of the client stamp less the server's")
    print("   write over each stream's tokens but its last two / over its final token; tok late:")
    print("   the C server's lateness p99 over all its token writes (its SIGTERM report); paid:")
    print("   measured requests that opened a connection; open: connections pre-opened before")
    print("   the window; conn: connect p50, ms; spread: first to last send stamp of the wave, ms")
    return rows


if __name__ == "__main__":
    main()
