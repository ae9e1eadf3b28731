"""Section 2: client CPU seconds per 1,000 requests (64-token streams, c=64), in rotated rounds.

Two loads: the bulk server (each response in one write: the client's own cost per request)
and the timed server (a write per token, 20 ms apart: a wake-up per token, as against a
real server). The peers' figures are printed as a labelled reference and never divided
into ours: they were measured in another study, against another mock, another way.
"""

from __future__ import annotations

from typing import Any

from harness import (
    ITL_MS,
    PEERS_CPU_S_PER_1K,
    PEERS_SOURCE,
    REQUEST_S,
    TIMED_TOKENS,
    Bench,
    fmt,
    median,
    ratio,
    rotation,
)
from procs import RefServer

LABELS = {"raw": "raw reference", "lean": "loadbench", "httpx": "loadbench httpx"}

# Guards on loadbench ×raw, the figure a busy box leaves alone (2026-12-04: the raw
# client's seconds tripled beside other jobs and the ratio stayed put): 2.25× (bulk) and
# 2.05× (real-time) measured on an idle box on 2026-11-25, plus ~30%.
GUARD_X_RAW = {"bulk": 2.9, "real-time": 2.7}
# Issue 12's target for real-time pacing, with and without uvloop: a goal, not counted.
GOAL_REALTIME_X_RAW = 1.3


def per_1k_requests(cell: dict[str, Any]) -> float | None:
    per_1k = None
    if not cell.get("error") and cell.get("ok"):
        per_1k = 1e3 * cell["cpu_s"] / cell["ok"]
    cell["cpu_s_per_1k_requests"] = per_1k
    return per_1k


def _rows(b: Bench, load: str, runs: dict[str, list[dict[str, Any]]]) -> None:
    med = {}
    for kind, got in runs.items():
        figs = [per_1k_requests(c) for c in got]
        med[kind] = median(figs)
        ok = median([c.get("ok") for c in got if not c.get("error")])
        each = ", ".join(fmt(f, 0, 3) for f in figs)
        x_raw = f"{fmt(ratio(med[kind], med['raw']), 5, 2, '×')} raw"
        print(
            f"   {LABELS[kind]:<16} {fmt(med[kind], 6, 3)} s {x_raw}"
            f"  ({fmt(ok, 5, 0)} requests)  [{each}]"
        )
        for c in got:
            if c.get("error"):
                print(f"   {'':>19}round {c['round']}: {c['error']}")
    name = f"CPU/request: loadbench ×raw, {load}"
    x_raw = ratio(med["lean"], med["raw"])
    if load in GUARD_X_RAW:
        verdict = b.target(name, x_raw, GUARD_X_RAW[load], "×")
    else:
        verdict = f"{fmt(x_raw, 0, 2, '×')}"
    if load.startswith("real-time"):
        verdict += f"; {b.goal(name, x_raw, GOAL_REALTIME_X_RAW, '×')}"
    print(f"   target, {load}: loadbench CPU per request, ×raw: {verdict}")


def section_requests(b: Bench, bulk: RefServer, timed: RefServer) -> None:
    p = b.plan
    print()
    print("2. Client CPU seconds per 1,000 requests: 64-token streams, c=64")
    print(f"   {p.rounds} round(s), each running every client on both servers, the order")
    print("   rotating; figures: the median over the rounds [each round]")
    bulk_runs: dict[str, list[dict[str, Any]]] = {k: [] for k in LABELS}
    timed_runs: dict[str, list[dict[str, Any]]] = {k: [] for k in ("raw", "lean")}
    plain_runs: dict[str, list[dict[str, Any]]] = {k: [] for k in ("raw", "lean")}
    realtime_s = 2 * REQUEST_S + p.requests_window_s
    for r in range(1, p.rounds + 1):
        for kind in rotation(list(bulk_runs), r):
            cell = b.client(
                bulk,
                kind,
                64,
                TIMED_TOKENS,
                section="requests",
                warmup=["--warmup-s", str(p.warmup_s)],
                duration_s=p.requests_window_s,
                limit_s=30.0,
                round_no=r,
            )
            bulk_runs[kind].append(cell)
        # The real-time load twice: on uvloop (as shipped), then with both clients on
        # asyncio's own loop.
        for runs, section, extra in (
            (timed_runs, "requests-realtime", []),
            (plain_runs, "requests-realtime-asyncio", ["--no-uvloop"]),
        ):
            for kind in rotation(list(runs), r):
                cell = b.client(
                    timed,
                    kind,
                    64,
                    TIMED_TOKENS,
                    section=section,
                    warmup=["--warmup-each", "1"],
                    duration_s=realtime_s,
                    limit_s=realtime_s + 25,
                    stagger_s=REQUEST_S,
                    round_no=r,
                    extra=extra,
                )
                runs[kind].append(cell)
    print(
        f"   bulk server: {p.warmup_s:g} s warmup, then {p.requests_window_s:g} s as in section 1"
    )
    _rows(b, "bulk", bulk_runs)
    print(
        f"   real-time load: the timed server of section 3 (one write per token, {ITL_MS:g} ms"
        " apart),"
    )
    print(
        f"   streams spread over {REQUEST_S:.2f} s, {p.requests_window_s:g} s steady; no stamp hook"
    )
    _rows(b, "real-time", timed_runs)
    print("   the same real-time load, both clients on asyncio's own event loop (no uvloop)")
    _rows(b, "real-time, no uvloop", plain_runs)
    print(f"   peers ({PEERS_SOURCE}:")
    print("   whole-run CPU minus start-up, a mock streaming a token every 10 ms, c=64; not")
    print("   re-run here, so no ratio against the figures above is measured):")
    print("   " + " · ".join(f"{name} {v:g} s" for name, v in PEERS_CPU_S_PER_1K))
