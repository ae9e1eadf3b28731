"""Cold-start timing error: the first wave of a closed-loop stage, connections pre-opened or not.

The simulator runs in a child process with exact timing (jitter 0, TTFT 100 ms, ITL 20 ms,
32 tokens, a slot for every stream, no batch slowdown), so every figure above the truth is
the client's. Each cell starts a fresh simulator, sends one warm-up request, then a stage of
``c`` requests on ``c`` workers: every request is in the first wave, and without pre-opening
each of them opens its own connection on one event loop. Reported: the stage's TTFT p99
and ITL p99 minus the truth (median over rounds), and what the connect histogram recorded.

    .venv/bin/python benchmarks/section_coldstart.py [--rounds N] [--concurrency 64 256]

From ``bench.py``: ``section_coldstart.main([])`` (it prints its own table).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import anyio

from loadbench.http.client import LoadClient
from loadbench.run.engine import RunState, run_stage
from loadbench.run.plan import plan_stages
from loadbench.scenario.model import Api, Arrival, LoadMode, LoadSpec, RequestSpec, Scenario, Target
from loadbench.sim.server import SimConfig, simulator_process

TTFT_MS, ITL_MS, TOKENS = 100.0, 20.0, 32
# The issue's targets: TTFT and ITL p99 within this many ms of the truth, pre-opened.
TARGET_MS = {64: 2.0, 256: 5.0}
_MODEL = "sim-model"


def _scenario(base_url: str, concurrency: int) -> Scenario:
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
        request=RequestSpec(TOKENS, None, True, MappingProxyType({})),
        load=load,
    )


async def _cell(base_url: str, concurrency: int, preconnect: bool) -> dict[str, Any]:
    s = _scenario(base_url, concurrency)
    (plan,) = plan_stages(s)
    async with LoadClient(
        base_url=base_url,
        api=s.target.api,
        spec=s.request,
        timeout_s=s.target.timeout_s,
        max_connections=concurrency,
        preconnect=preconnect,
    ) as client:
        stage = await run_stage(plan, s.prompts, client, RunState())
    fig = stage.figures
    lat = fig.latency_ms
    connect = lat.get("connect")
    return {
        "ok": fig.ok,
        "failed": fig.failed,
        "ttft_err": lat["ttft"].p99 - TTFT_MS,
        "itl_err": lat["itl"].p99 - ITL_MS,
        # TTFT less the server's own (actual) prefill: the client's part and the server's
        # parse, without the server's late wake-ups on a busy box.
        "outside": lat["ttft_outside_prefill"].p99,
        "preopened": fig.preopened or 0,
        "paid": fig.opened or 0,
        "connect_p50": connect.p50 if connect is not None and connect.count else None,
    }


def _backend() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def measure(concurrency: int, preconnect: bool, rounds: int) -> dict[str, Any]:
    config = SimConfig(
        ttft_ms=TTFT_MS,
        itl_ms=ITL_MS,
        jitter=0.0,
        slots=max(concurrency, 8),
        batch_itl_factor=0.0,
        max_tokens_default=TOKENS,
        seed=1,
    )
    cells = []
    for _ in range(rounds):
        with simulator_process(config) as sim:  # a fresh server: nothing warm on either side
            cells.append(
                anyio.run(_cell, sim.base_url, concurrency, preconnect, backend_options=_backend())
            )
    out = dict(cells[-1])
    for key in ("ttft_err", "itl_err", "outside"):
        out[key] = statistics.median(c[key] for c in cells)
    out["failed"] = sum(c["failed"] for c in cells)
    return out


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="fresh simulators per cell (median)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    args = p.parse_args(argv)
    print()
    print(
        f"cold start: timing error of a stage's first wave, exact-timing simulator in a child"
        f" process (TTFT {TTFT_MS:g} ms, ITL {ITL_MS:g} ms, {TOKENS} tokens), 1 warm-up request,"
    )
    print(f"   median of {args.rounds} rounds, each on a fresh simulator; error = p99 - truth, ms")
    print(
        f"   {'c':>4} | {'pre-opening off':^35} | {'pre-opening on':^35} | target"
        f"\n   {'':>4} | {'TTFT p99':>8} {'ITL p99':>8} {'outside':>7} {'paid':>4} {'conn':>4} |"
        f" {'TTFT p99':>8} {'ITL p99':>8} {'outside':>7} {'open':>4} {'paid':>4} |"
    )
    rows = []
    for c in args.concurrency:
        off = measure(c, False, args.rounds)
        on = measure(c, True, args.rounds)
        target = TARGET_MS.get(c)
        worst = max(on["ttft_err"], on["itl_err"])
        verdict = "" if target is None else f"{'PASS' if worst <= target else 'MISS'} ≤ {target:g}"
        conn = f"{off['connect_p50']:.1f}" if off["connect_p50"] is not None else "-"
        print(
            f"   {c:>4} | {off['ttft_err']:>+8.2f} {off['itl_err']:>+8.2f} {off['outside']:>7.2f}"
            f" {off['paid']:>4} {conn:>4} | {on['ttft_err']:>+8.2f} {on['itl_err']:>+8.2f}"
            f" {on['outside']:>7.2f} {on['preopened']:>4} {on['paid']:>4} | {verdict}"
        )
        failed = off["failed"] + on["failed"]
        if failed:
            print(f"   c={c}: {failed} request(s) failed")
        rows.append({"concurrency": c, "off": off, "on": on, "target_ms": target})
    print("   paid: measured requests that opened a connection (the connect histogram's count);")
    print("   conn: its p50, ms; open: connections pre-opened before the measured window;")
    print("   outside: TTFT p99 less the server's own measured prefill (its late wake-ups out)")
    return rows


if __name__ == "__main__":
    main()
