"""The fault matrix: every simulated fault through the real client and engine, alone and mixed.

Each fault must end as its own error class, every request must be accounted for once,
failures must stay out of the latency histograms, and the client's counts must equal what
the simulator's ``GET /stats`` says it did. Each case runs at concurrency 1 and 256.

The client's timeout is far above an unfaulted request's time, so that only the faults
time out: at concurrency 256, in one event loop with the simulator, connecting and the first
token take up to ~0.5 s on an idle 2-core machine and ~0.9 s on a busy one. A fault that
ends in a timeout (a stall, a silence) costs a whole timeout, so those cases send one wave
of requests; everything else answers within milliseconds.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from types import MappingProxyType
from typing import Any

import anyio
import httpx
import pytest

from loadbench.http.client import LoadClient
from loadbench.run.engine import RunState, StageResult, run_stage
from loadbench.scenario.model import Api, RequestSpec
from loadbench.sim.faults import RATE_FIELDS
from loadbench.sim.server import SimConfig
from tests.conftest import start_sim
from tests.test_engine import PROMPTS, closed

pytestmark = pytest.mark.anyio

SPEC = RequestSpec(max_tokens=4, temperature=0.0, stream=True, extra=MappingProxyType({}))
# Small delays; a stall or a silence lasts far beyond any client timeout used here.
BASE = SimConfig(ttft_ms=2, itl_ms=1, slots=512, stall_s=30.0)

# rate field, the simulator's outcome counter, the client's error class
MATRIX = (
    ("error_rate", "http_500", "http_500"),
    ("rate_limit_rate", "http_429", "http_429"),
    ("unavailable_rate", "http_503", "http_503"),
    ("unauthorized_rate", "http_401", "http_401"),
    ("reset_rate", "reset", "no_response"),
    ("drop_rate", "drop", "connection_dropped"),
    ("malformed_rate", "malformed", "malformed_event"),
    ("bad_json_rate", "bad_json", "malformed_event"),
    ("stall_rate", "stall", "timeout"),
    ("silent_rate", "silent", "timeout"),
    ("not_sse_rate", "not_sse", "not_sse"),
    ("empty_rate", "empty", "empty_completion"),
    ("no_done_rate", "no_done", "incomplete_stream"),
)
TIMEOUTS = ("stall_rate", "silent_rate")
TIMEOUT_S = {1: 0.5, 256: 3.0}


async def run_against(
    config: SimConfig, concurrency: int, requests: int, timeout_s: float
) -> tuple[StageResult, dict[str, Any]]:
    """One closed-loop stage against a fresh simulator, and its ``/stats`` once settled."""
    async with anyio.create_task_group() as tg:
        sim = await start_sim(config, tg)
        async with LoadClient(
            base_url=sim.url,
            api=Api.CHAT,
            spec=SPEC,
            timeout_s=timeout_s,
            max_connections=concurrency,
        ) as client:
            with anyio.fail_after(20):
                result = await run_stage(closed(concurrency, requests), PROMPTS, client, RunState())
        stats = await settled_stats(sim.url)
        tg.cancel_scope.cancel()
    return result, stats


async def settled_stats(url: str) -> dict[str, Any]:
    """``/stats`` once every request has its outcome.

    The simulator counts a request when its handler ends: just after the client has its
    answer, or, for a client that timed out, once the server notices the hang-up.
    """
    async with httpx.AsyncClient(trust_env=False) as http:
        with anyio.fail_after(5):
            while True:
                stats: dict[str, Any] = (await http.get(f"{url}/stats")).json()
                if sum(stats["outcomes"].values()) == stats["requests"]:
                    return stats
                await anyio.sleep(0.01)


def check_accounts(result: StageResult, stats: dict[str, Any], requests: int) -> None:
    """Every request counted once, each fault as its own class, and as the server saw it."""
    fig = result.figures
    assert fig.sent == requests
    assert fig.sent == fig.ok + fig.failed
    assert fig.failed == sum(fig.errors.values())
    outcomes = stats["outcomes"]
    assert stats["requests"] == fig.sent  # nothing resent behind the engine's back
    assert outcomes["client_disconnect"] == outcomes["bad_request"] == 0
    expected: Counter[str] = Counter()
    for _, name, error in MATRIX:
        expected[error] += outcomes[name]
    assert fig.errors == {error: n for error, n in expected.items() if n}
    assert fig.ok == outcomes["ok"]
    assert fig.latency_ms["e2e"].count == fig.ok  # failures stay out of the latencies
    assert fig.latency_ms["ttft"].count == fig.ok
    assert fig.output_tokens == fig.ok * SPEC.max_tokens


def test_the_matrix_covers_every_fault() -> None:
    assert sorted(field for field, _, _ in MATRIX) == sorted(RATE_FIELDS)


@pytest.mark.parametrize("concurrency", sorted(TIMEOUT_S))
@pytest.mark.parametrize(
    ("field", "outcome", "error"), MATRIX, ids=[outcome for _, outcome, _ in MATRIX]
)
async def test_each_fault_alone(concurrency: int, field: str, outcome: str, error: str) -> None:
    if field in TIMEOUTS:
        requests = 3 if concurrency == 1 else concurrency  # each costs a timeout
    else:
        requests = 12 if concurrency == 1 else 300  # 300: some reuse a kept-alive connection
    alone: dict[str, Any] = {field: 1.0}
    config = dataclasses.replace(BASE, **alone)
    result, stats = await run_against(config, concurrency, requests, TIMEOUT_S[concurrency])
    check_accounts(result, stats, requests)
    assert result.figures.errors == {error: requests}
    assert stats["outcomes"][outcome] == requests


def mix(seed: int, *, reset: bool) -> SimConfig:
    rates: dict[str, Any] = {f: 0.06 for f in RATE_FIELDS if reset or f != "reset_rate"}
    return dataclasses.replace(BASE, seed=seed, **rates)


# The n-th request the simulator reads gets the n-th draw. With seed 72 the first 40 draws
# hold every fault at least once, with and without resets, and only one stall and one
# silence (each costs a whole timeout at concurrency 1).
MIX_SEED = 72
C1, C256 = (1, 40, TIMEOUT_S[1]), (256, 300, TIMEOUT_S[256])  # concurrency, requests, timeout


@pytest.mark.parametrize(
    ("concurrency", "requests", "timeout_s"),
    [pytest.param(*C1, id="c1"), pytest.param(*C256, id="c256")],
)
async def test_a_mix_of_faults_but_resets(
    concurrency: int, requests: int, timeout_s: float
) -> None:
    result, stats = await run_against(mix(MIX_SEED, reset=False), concurrency, requests, timeout_s)
    check_accounts(result, stats, requests)
    outcomes = stats["outcomes"]
    assert all(outcomes[name] > 0 for field, name, _ in MATRIX if field != "reset_rate")
    assert outcomes["ok"] > 0


@pytest.mark.parametrize(
    ("concurrency", "requests", "timeout_s"),
    [pytest.param(*C1, id="c1"), pytest.param(*C256, id="c256")],
)
async def test_a_mix_of_every_fault(concurrency: int, requests: int, timeout_s: float) -> None:
    result, stats = await run_against(mix(MIX_SEED, reset=True), concurrency, requests, timeout_s)
    check_accounts(result, stats, requests)
    assert all(stats["outcomes"][name] > 0 for _, name, _ in MATRIX)


async def test_a_reset_on_a_reused_connection_is_counted_not_resent() -> None:
    # Seed 10 draws no fault, then a reset: the second request goes out on the kept-alive
    # connection of the first.
    config = dataclasses.replace(BASE, seed=10, reset_rate=0.5)
    result, stats = await run_against(config, 1, 2, 5.0)
    assert stats["requests"] == 2
    assert result.figures.errors == {"no_response": 1}
