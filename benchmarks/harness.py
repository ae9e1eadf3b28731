"""What every section shares: the load shapes, the plan, one client run, targets and goals.

A target is a regression guard: today's figure on the reference machine plus about 30%
headroom, so a real slowdown shows as MISS while run-to-run noise (±15-25% on a shared
2-core VM) does not. A goal is an ambition printed beside it and never counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
from procs import HERE, PY, Children, RefServer

T = TypeVar("T")

TTFT_MS = 100.0
ITL_MS = 20.0
TIMED_TOKENS = 64
REQUEST_S = (TTFT_MS + (TIMED_TOKENS - 1) * ITL_MS) / 1000  # one timed request: 1.36 s
TLS_CONC = 64
TLS_TOKENS = 16

# Never divide a figure measured here by one of these: they come from another run, on
# another mock (10 ms ITL), with another method (whole-run CPU minus start-up).
PEERS_SOURCE = "reference from ../shared/research/peers.md, measured elsewhere with another method"
PEERS_CPU_S_PER_1K = (("vLLM bench", 2.8), ("Locust", 2.5), ("AIPerf", 9.6), ("GuideLLM", 30.0))
PEERS_STARTUP = "AIPerf 14.5 s, GuideLLM 32 s, vLLM bench 33 s"


@dataclass(frozen=True)
class Plan:
    """What to run; --quick is a smoke-sized copy."""

    concurrency: tuple[int, ...] = (1, 64, 256, 1000)
    tokens: tuple[int, ...] = (16, 256)
    warmup_s: float = 1.0
    window_s: float = 2.5
    requests_window_s: float = 4.0
    rounds: int = 3  # sections 1, 2 and 5: rounds in rotated order, figures are medians
    timing_concurrency: tuple[int, ...] = (1, 64, 256)
    steady_s: float = 6.0
    phase_locked: bool = True
    startup_trials: int = 3
    budget_s: float = 720.0


QUICK = Plan(
    concurrency=(64,),
    tokens=(16, 256),
    warmup_s=0.5,
    window_s=1.5,
    requests_window_s=2.0,
    rounds=1,
    timing_concurrency=(64, 256),
    steady_s=2.5,
    phase_locked=False,
    startup_trials=1,
    budget_s=160.0,
)


def rotation(items: Sequence[T], round_no: int) -> list[T]:
    """Round 1 runs the items in order, each later round starts one further along, so no
    item always runs first (after the server idled) or last."""
    k = (round_no - 1) % len(items)
    return [*items[k:], *items[:k]]


def rotated(items: Sequence[T], rounds: int) -> Iterator[tuple[int, T]]:
    """(round, item) for every round in turn: rounds spread over the section, so a burst
    of someone else's load lands on one round, which the median then drops."""
    for r in range(1, rounds + 1):
        for item in rotation(items, r):
            yield r, item


def median(xs: Sequence[float | None]) -> float | None:
    got = [x for x in xs if x is not None]
    return statistics.median(got) if got else None


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, printed beside figures a busy box moves."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


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
    goals: list[dict[str, Any]] = field(default_factory=list)

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
        round_no: int = 1,
        extra: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Run one client process for one cell; returns its JSON plus what we watched.
        ``extra``: more options for the client (``--no-uvloop``, which both clients take)."""
        cell: dict[str, Any] = {"section": section, "client": kind, "conc": conc, "tokens": tokens}
        cell["tls"], cell["round"] = tls, round_no
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
        argv += extra
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
        """A regression guard: counted in the PASS/MISS summary."""
        ok = figure is not None and figure <= limit
        self.targets.append({"target": name, "figure": figure, "limit": limit, "pass": ok})
        shown = "n/a" if figure is None else f"{figure:.2f}{unit}"
        return f"{shown} (guard ≤ {limit:g}{unit}) {'PASS' if ok else 'MISS'}"

    def goal(self, name: str, figure: float | None, goal: float, unit: str = "") -> str:
        """An ambition, printed and kept in the JSON, never counted as PASS or MISS."""
        met = figure is not None and figure <= goal
        self.goals.append({"goal": name, "figure": figure, "goal_value": goal, "met": met})
        return f"goal ≤ {goal:g}{unit}: {'met' if met else 'not yet'}"


def ms_per_1k(cell: dict[str, Any]) -> float | None:
    if cell.get("error") or not cell.get("events"):
        return None
    return float(1e6 * cell["cpu_s"] / cell["events"])


def fmt(x: float | None, width: int, digits: int = 2, suffix: str = "") -> str:
    text = "-" if x is None else f"{x:.{digits}f}{suffix}"
    return text.rjust(width)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or not b else a / b
