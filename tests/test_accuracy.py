"""Timing accuracy from a cold stage start, against a server whose timing is exact.

``make bench`` proves speed with warmed connections; this is the default suite's check that
the numbers loadbench reports are the server's. The simulator runs in its own process with
jitter 0 and no batch slow-down, so every request's first token comes TTFT_MS after it
arrives and each later one ITL_MS after the one before (absolute deadlines). A fresh client
opens every connection inside the measured stage, as a first stage of a run does.

What a regression would break: TTFT counted from the wrong stamp (stage start, worker
start) or delayed by connection setup gone slow; tokens coalesced by a buffering reader
(gaps of 0 and 2 x ITL_MS, p50 far from ITL_MS); a client that cannot keep up with 32
streams (p50s drift up, p99s explode). Not 64: there the simulator itself, Python in one
process, took its burst of 64 cold requests late on this busy box (TTFT min 66-134 ms).

Measured here (2 cores, load average 4.5-5 from other test runs; 50 ms TTFT, 20 ms gaps,
8 tokens, 3 rounds per stage), ms, one line per cold stage:
  c=16  TTFT p50 55-100 (most 55-75), p99 62-273, min 51-76; ITL p50 16.7-20.8 (most
        20.06-20.2), p99 29-101
  c=32  TTFT p50 79-323 (most 79-141), p99 95-439;  ITL p50 20.08-40.2 (most 20.1-22.8),
        p99 35-286
The best c=16 stages were within 5 ms (TTFT p50) and 0.1 ms (ITL p50) of the server's.
A burst of other work spoils single stages, so each load gets up to three attempts and
one clean stage passes; under the load above every run passed within three.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType

import anyio
import pytest

from loadbench.http.client import LoadClient
from loadbench.metrics import StageFigures
from loadbench.run.engine import RunState, run_stage
from loadbench.run.plan import StagePlan
from loadbench.scenario.model import Api, LoadMode, RequestSpec
from loadbench.sim.server import SimConfig, simulator_process

TTFT_MS = 50.0
ITL_MS = 20.0
TOKENS = 8
EXACT = SimConfig(
    ttft_ms=TTFT_MS, itl_ms=ITL_MS, jitter=0.0, slots=64, batch_itl_factor=0.0, seed=1
)
SPEC = RequestSpec(max_tokens=TOKENS, temperature=0.0, stream=True, extra=MappingProxyType({}))


@pytest.fixture(scope="module")
def exact_server() -> Iterator[str]:
    with simulator_process(EXACT) as sim:
        yield sim.base_url


def cold_stage(base_url: str, concurrency: int) -> StageFigures:
    """Three rounds of requests at ``concurrency``, from a client with no connections yet."""
    plan = StagePlan(
        model="m",
        mode=LoadMode.CONCURRENCY,
        concurrency=concurrency,
        rate=None,
        max_concurrency=None,
        warmup=0,
        requests=3 * concurrency,
        duration_s=None,
        offsets_ns=(),
        prompt_order=(0, 1),
    )

    async def go() -> StageFigures:
        async with LoadClient(
            base_url=base_url, api=Api.CHAT, spec=SPEC, timeout_s=10, max_connections=concurrency
        ) as client:
            with anyio.fail_after(30):
                result = await run_stage(plan, ("one two", "three four"), client, RunState())
        return result.figures

    return anyio.run(go)


# How far past the exact value a figure may sit: cold connections, a burst of requests the
# simulator (Python, another process) must accept at once, two processes on two cores
# shared with other test runs. Far under what a broken client shows: TTFT counted from the
# stage start puts rounds 2 and 3 at +190 and +380 ms (p50 ~ +240 ms); a reader that
# batched events reports gaps of 0 and 40 ms.
TTFT_P50_SLACK_MS = {16: 60.0, 32: 100.0}
TTFT_P99_SLACK_MS = {16: 250.0, 32: 400.0}
ITL_P50_SLACK_MS = {16: 2.0, 32: 3.0}
ITL_P99_SLACK_MS = {16: 80.0, 32: 120.0}
ATTEMPTS = 3


def problems(fig: StageFigures, concurrency: int) -> list[str]:
    """What is off in one cold stage; empty when the reported timing is the server's."""
    ttft, itl, e2e = fig.latency_ms["ttft"], fig.latency_ms["itl"], fig.latency_ms["e2e"]
    exact_e2e_ms = TTFT_MS + (TOKENS - 1) * ITL_MS
    checks = {
        # Never faster than the server (HDR buckets: within 0.1%, so 0.5 ms of margin).
        "ttft.min": ttft.min >= TTFT_MS - 0.5,
        "e2e.min": e2e.min >= exact_e2e_ms - 0.5,
        "ttft.p50": ttft.p50 <= TTFT_MS + TTFT_P50_SLACK_MS[concurrency],
        "ttft.p99": ttft.p99 <= TTFT_MS + TTFT_P99_SLACK_MS[concurrency],
        # Gaps are exact on the server; a reader that batched events would give 0s and 40s.
        "itl.p50": abs(itl.p50 - ITL_MS) <= ITL_P50_SLACK_MS[concurrency],
        "itl.p99": itl.p99 <= ITL_MS + ITL_P99_SLACK_MS[concurrency],
    }
    return [
        f"{name} off: ttft {ttft}, itl {itl}, e2e min {e2e.min}"
        for name, ok in checks.items()
        if not ok
    ]


@pytest.mark.parametrize("concurrency", [16, 32])
def test_cold_stage_reports_the_servers_exact_timing(exact_server: str, concurrency: int) -> None:
    """Up to three cold stages: one that passes proves the client can report exact timing;
    a regression fails all three, while a burst of other work on a shared machine rarely
    spans three in a row."""
    found: list[str] = []
    for _ in range(ATTEMPTS):
        fig = cold_stage(exact_server, concurrency)
        assert (fig.ok, fig.failed) == (3 * concurrency, 0)
        assert fig.latency_ms["ttft"].count == 3 * concurrency
        assert fig.latency_ms["itl"].count == 3 * concurrency * (TOKENS - 1)
        ttft, itl = fig.latency_ms["ttft"], fig.latency_ms["itl"]
        print(
            f"c={concurrency} ttft p50 {ttft.p50:.2f} p99 {ttft.p99:.2f} min {ttft.min:.2f}"
            f" | itl p50 {itl.p50:.3f} p99 {itl.p99:.2f}"
        )
        found = problems(fig, concurrency)
        if not found:
            return
    pytest.fail("; ".join(found))
