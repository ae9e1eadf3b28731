"""``make bench``: loadbench's speed claims, measured on this machine, side by side in one run.

Prints five sections, each figure next to its target with PASS/MISS (a benchmark, never
a failing build):

1. client CPU per 1,000 SSE events: loadbench (lean transport), loadbench over httpx's own
   transport and a raw asyncio reference client, against a bulk server
   (``section_events.py``);
2. client CPU seconds per 1,000 requests (64-token streams, c=64), against the bulk
   server and a timed one (``section_requests.py``);
3. timing error against a timed server (TTFT 100 ms, ITL 20 ms), as loadbench reports it
   and paired against the server's own write stamps (``section_timing.py``);
4. start-up: spawning ``loadbench run`` until the server parses its first POST
   (``section_startup.py``);
5. client CPU per 1,000 SSE events over https (lean transport and httpx's pool), against
   plain http on the lean transport, against the bulk server behind TLS (a throwaway CA
   from ``trustme``, in the ``dev`` extra) (``section_tls.py``);
6. a cold stage start: TTFT and ITL p99 error at c=64 and c=256, with connections
   pre-opened and not, against the exact-timing C server (``benchmarks/cserver/``, when a C
   compiler is there) and loadbench's simulator side by side (``section_coldstart.py``);
7. scaling: SSE events/s and CPU per event with 1, 2 and ``auto`` worker processes, and the
   concurrency at which each turns client-bound (``section_scaling.py``).

Sections 1, 2 and 5 run in rounds whose order rotates and report medians. A target is a
regression guard (today's figure plus ~30%), counted in the summary; a goal is an
ambition, printed and never counted (``harness.py``). Peers' figures are a labelled
reference from another study, never a ratio measured here.

Every process is a child in its own session, pinned (Linux) with the server on one core
and the client on the other, bounded in time (its own limit, ours, and a total budget),
and killed by pid on the way out, Ctrl-C included (``procs.py``). Load goes to 127.0.0.1
only.

    .venv/bin/python benchmarks/bench.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness import ITL_MS, QUICK, TTFT_MS, Bench, Plan, loadavg, median
from procs import Children, start_server, tls_files
from section_coldstart import main as section_coldstart
from section_events import section_events
from section_requests import section_requests
from section_scaling import main as section_scaling
from section_startup import section_startup
from section_timing import section_timing
from section_tls import section_tls

NOISE_NOTE = (
    "note: a shared 2-core VM; expect ±15-25% noise between runs. Read the figures as\n"
    "ratios: loadbench against the raw client, measured seconds apart on the same cores."
)

BUSY_PCT = 25.0  # other processes' median CPU, % of one core, above which the guards mislead


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
    load = loadavg()
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


def summary(b: Bench) -> None:
    passed = sum(t["pass"] for t in b.targets)
    print(f"targets (regression guards): {passed}/{len(b.targets)} PASS")
    for t in b.targets:
        print(f"   {'PASS' if t['pass'] else 'MISS'}  {t['target']}")
    if b.goals:
        print("goals (not counted):")
        for g in b.goals:
            print(f"   {'met' if g['met'] else 'not yet':<7}  {g['goal']} ≤ {g['goal_value']:g}")
    busy = median([c.get("other_pct") for c in b.cells])
    if busy is not None and busy > BUSY_PCT:
        print(f"the box was busy: other processes took a median {busy:.0f}% of a core while we")
        print("measured; figures in s and ms run high then, the ratios hold up better")


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
            bulk = start_server(
                children, "bulk", b.tmp, life, ttft_ms=TTFT_MS, itl_ms=ITL_MS, tls=tls_files(b.tmp)
            )
            timed = start_server(children, "timed", b.tmp, life, ttft_ms=TTFT_MS, itl_ms=ITL_MS)
            section_events(b, bulk)
            section_requests(b, bulk, timed)
            section_timing(b, timed)
            children.stop(timed.proc)
            section_startup(b, bulk)
            section_tls(b, bulk)
            section_coldstart(["--rounds", "1"] if args.quick else [])
            section_scaling(["--quick"] if args.quick else [])
        except KeyboardInterrupt:
            print("\ninterrupted: every child process stopped", file=sys.stderr)
            status = 130
        finally:
            children.stop_all()
        print()
        summary(b)
        load = loadavg()
        print(f"done in {b.elapsed():.0f} s; load average at the end: {load}")
        if args.json:
            doc = {"machine": facts, "plan": asdict(plan), "cells": b.cells}
            doc |= {"targets": b.targets, "goals": b.goals}
            Path(args.json).write_text(json.dumps(doc, indent=1, default=str) + "\n")
            print(f"figures written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
