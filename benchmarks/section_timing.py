"""Section 3: timing error against the timed server (TTFT 100 ms, ITL 20 ms, 64 tokens).

Two views: the percentiles as each client reports them, minus the true schedule; and each
client stamp paired with the server's own write stamp carried in the stream, which
separates the client's error from the server's lateness (reported beside it).
"""

from __future__ import annotations

from typing import Any

from harness import ITL_MS, REQUEST_S, TIMED_TOKENS, TTFT_MS, Bench
from procs import RefServer

# Guards: p99 error measured 0.50 / 0.45 / 0.58 ms at c=1 / 64 / 256 on 2026-11-25, plus
# ~30%. The original targets (1, 1 and 3 ms) were looser: no goal beyond the guard.
GUARD_P99_MS = {1: 0.65, 64: 0.6, 256: 0.75}


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
        if kind == "lean" and conc in GUARD_P99_MS and not locked:
            name_t = f"timing: loadbench p99 error at c={conc}"
            verdict = b.target(name_t, worst, GUARD_P99_MS[conc], " ms")
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
