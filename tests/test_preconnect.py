"""Honest stage starts: connections opened before the measured window, and the ``connect``
histogram counting exactly the connections measured requests opened themselves."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any

import anyio
import anyio.abc
import pytest

from loadbench.http.client import LoadClient
from loadbench.metrics import StageFigures
from loadbench.run.engine import RunState, connections_needed, run_stage
from loadbench.run.plan import StagePlan
from loadbench.scenario.model import Api, LoadMode, RequestSpec
from loadbench.sim.server import SimConfig, simulator_process
from loadbench.sim.simulator import Simulator

SPEC = RequestSpec(max_tokens=32, temperature=None, stream=True, extra=MappingProxyType({}))
EXACT = SimConfig(ttft_ms=100, itl_ms=20, jitter=0, slots=64, batch_itl_factor=0, seed=1)
FAST = SimConfig(ttft_ms=5, itl_ms=1, slots=64, batch_itl_factor=0, seed=1)
# The part of a pre-opened first wave's TTFT p99 at c=64 that is not the server's own
# prefill (ttft_outside_prefill: its parse of 64 requests at once, the network, us): 35-110 ms
# measured on this 2-core box with other suites and a 2,000-stream test running beside it
# (a few ms when quiet); the structural claim (no measured request paid a connect) is exact.
FIRST_WAVE_OUTSIDE_PREFILL_MS = 200.0


def closed(concurrency: int, requests: int, warmup: int = 1) -> StagePlan:
    return StagePlan(
        model="m",
        mode=LoadMode.CONCURRENCY,
        concurrency=concurrency,
        rate=None,
        max_concurrency=None,
        warmup=warmup,
        requests=requests,
        duration_s=None,
        offsets_ns=(),
        prompt_order=(0,),
    )


async def stage(
    url: str, plan: StagePlan, *, preconnect: bool = True, tokens: int = 32
) -> StageFigures:
    async with LoadClient(
        base_url=url,
        api=Api.CHAT,
        spec=dataclasses.replace(SPEC, max_tokens=tokens),
        timeout_s=30,
        max_connections=plan.max_streams,
        preconnect=preconnect,
    ) as client:
        result = await run_stage(plan, ("hello",), client, RunState())
    return result.figures


class _CloseAfterEach(anyio.abc.ByteStream):
    """The client's requests as the simulator reads them say ``connection: close``, so it
    closes every connection after its response, as llama.cpp's server does."""

    def __init__(self, inner: anyio.abc.SocketStream) -> None:
        self._inner = inner

    async def receive(self, max_bytes: int = 65536) -> bytes:
        data = await self._inner.receive(max_bytes)
        return data.replace(b"\r\nConnection: keep-alive\r\n", b"\r\nConnection: close\r\n", 1)

    async def send(self, item: bytes) -> None:
        await self._inner.send(item)

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def aclose(self) -> None:
        await self._inner.aclose()

    @property
    def extra_attributes(self) -> Any:
        return self._inner.extra_attributes


@asynccontextmanager
async def closing_sim() -> AsyncIterator[tuple[str, list[int]]]:
    """The simulator in this event loop, closing every connection; the accept count."""
    simulator = Simulator(FAST)
    accepts = [0]
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")

    async def handle(stream: anyio.abc.SocketStream) -> None:
        accepts[0] += 1
        await simulator.handle(_CloseAfterEach(stream))  # type: ignore[arg-type]

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        yield f"http://127.0.0.1:{port}/v1", accepts
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize("preconnect", [True, False], ids=["preconnect", "cold"])
async def test_a_server_that_closes_every_connection_shows_each_connect(preconnect: bool) -> None:
    """Pre-opened 4; the warm-up request uses one, the first measured wave the other 3 and
    one new connection; every later request opens its own, and each is in the histogram."""
    async with closing_sim() as (url, accepts):
        fig = await stage(url, closed(4, 12), preconnect=preconnect)
    assert fig.ok == 12
    assert fig.preopened == (4 if preconnect else 0)
    assert fig.opened == (12 - 3 if preconnect else 12)
    assert fig.histograms["connect"].total_count == fig.opened
    assert fig.latency_ms["connect"].count == fig.opened
    assert accepts[0] == fig.preopened + fig.opened + (0 if preconnect else 1)  # + warm-up's


def test_a_keep_alive_server_costs_no_connect_inside_the_window() -> None:
    with simulator_process(FAST) as sim:
        warm = anyio.run(stage, sim.base_url, closed(8, 24))
        cold = anyio.run(lambda: stage(sim.base_url, closed(8, 24), preconnect=False))
    assert (warm.preopened, warm.opened) == (8, 0)
    assert (cold.preopened, cold.opened) == (0, 7)  # the warm-up's connection is reused once
    assert warm.latency_ms["connect"].count == 0


def test_connections_needed_follows_the_stage() -> None:
    assert connections_needed(closed(64, 64)) == 64
    plan = StagePlan(
        model="m",
        mode=LoadMode.RATE,
        concurrency=None,
        rate=50.0,
        max_concurrency=None,
        warmup=0,
        requests=100,
        duration_s=None,
        offsets_ns=tuple(range(100)),
        prompt_order=(0,),
    )
    assert connections_needed(plan) == 51  # 50/s × 1 s assumed, + 1
    capped = StagePlan(**{**plan.__dict__, "max_concurrency": 16})
    assert connections_needed(capped) == 16
    few = StagePlan(**{**plan.__dict__, "offsets_ns": (0, 1, 2)})
    assert connections_needed(few) == 3


def test_a_preopened_first_wave_measures_the_server() -> None:
    """c=64 against exact timing, simulator in a child process, one warm-up request: no
    measured request opens a connection, and the first wave's TTFT beyond the server's own
    prefill stays within what a busy box adds."""
    plan = closed(64, 64)
    with simulator_process(EXACT) as sim:
        fig = anyio.run(lambda: stage(sim.base_url, plan, tokens=4))
    assert fig.ok == 64
    assert (fig.preopened, fig.opened) == (64, 0)
    assert fig.latency_ms["ttft"].p99 >= 100.0
    assert fig.latency_ms["ttft_outside_prefill"].p99 < FIRST_WAVE_OUTSIDE_PREFILL_MS
