"""The simulator's llama.cpp dialect: per-response ``timings`` and ``GET /metrics``.

Real sockets on 127.0.0.1, and one end-to-end run through ``loadbench run``. Timing bounds
are loose on the slow side (a loaded 2-core box wakes late) and firm only where the
schedule makes them so: prefill can never be shorter than its configured time.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadbench.observe.scrape import parse_metrics
from loadbench.sim.server import SimConfig, serve

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "count to ten please"}]  # 4 prompt tokens
TIMINGS_KEYS = [
    "cache_n",
    "prompt_n",
    "prompt_ms",
    "prompt_per_token_ms",
    "prompt_per_second",
    "predicted_n",
    "predicted_ms",
    "predicted_per_token_ms",
    "predicted_per_second",
]
# 100 ms prefill, then 9 gaps of 20 ms: predicted_ms 180 for 10 tokens.
TIMED = SimConfig(ttft_ms=100.0, itl_ms=20.0, batch_itl_factor=0.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def simulator(config: SimConfig) -> AsyncIterator[httpx.AsyncClient]:
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, config)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(10), trust_env=False
        ) as client:
            yield client
        tg.cancel_scope.cancel()


async def events(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[Any]:
    """Every data payload of one streamed response, decoded; ``[DONE]`` as a string."""
    response = await client.post(path, json={**body, "stream": True})
    assert response.status_code == 200
    out: list[Any] = []
    for block in response.text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def assert_timed(timings: dict[str, Any], *, prompt_n: int, predicted_n: int) -> None:
    """Against TIMED: exact counts, prefill at least its 100 ms, decode near its 180 ms."""
    assert list(timings) == TIMINGS_KEYS  # llama.cpp's keys, in its order
    assert (timings["cache_n"], timings["prompt_n"]) == (0, prompt_n)
    assert timings["predicted_n"] == predicted_n
    assert 99.9 <= timings["prompt_ms"] < 400
    assert 100 < timings["predicted_ms"] < 600
    per_token = timings["prompt_ms"] / prompt_n
    assert timings["prompt_per_token_ms"] == pytest.approx(per_token, abs=1e-3)
    assert timings["prompt_per_second"] == pytest.approx(1e3 / per_token, rel=1e-3)
    per_token = timings["predicted_ms"] / predicted_n
    assert timings["predicted_per_token_ms"] == pytest.approx(per_token, abs=1e-3)
    assert timings["predicted_per_second"] == pytest.approx(1e3 / per_token, rel=1e-3)


@pytest.mark.anyio
@pytest.mark.parametrize("include_usage", [True, False])
async def test_the_last_event_of_a_stream_carries_llamacpp_timings(include_usage: bool) -> None:
    body: dict[str, Any] = {"messages": MESSAGES, "max_tokens": 10}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with anyio.fail_after(10):
        async with simulator(TIMED) as client:
            got = await events(client, CHAT, body)
    assert got[-1] == "[DONE]"
    last, others = got[-2], got[:-2]
    assert all("timings" not in e for e in others)
    if include_usage:
        assert last["choices"] == []
        assert last["usage"]["completion_tokens"] == 10
    else:
        assert last["choices"][0]["finish_reason"] == "length"
    assert_timed(last["timings"], prompt_n=4, predicted_n=10)


@pytest.mark.anyio
async def test_a_whole_body_carries_timings_too() -> None:
    with anyio.fail_after(10):
        async with simulator(TIMED) as client:
            chat = await client.post(CHAT, json={"messages": MESSAGES, "max_tokens": 10})
            text = await client.post("/v1/completions", json={"prompt": "a b", "max_tokens": 10})
    assert chat.json()["usage"]["completion_tokens"] == 10
    assert_timed(chat.json()["timings"], prompt_n=4, predicted_n=10)
    assert_timed(text.json()["timings"], prompt_n=2, predicted_n=10)


@pytest.mark.anyio
async def test_one_token_has_no_decode_time_and_no_rate() -> None:
    """Rates over zero are null, as llama.cpp's JSON writer writes its inf and nan."""
    body = {"messages": [{"role": "user", "content": ""}], "max_tokens": 1}
    with anyio.fail_after(10):
        async with simulator(dataclasses.replace(TIMED, ttft_ms=5.0)) as client:
            timings = (await client.post(CHAT, json=body)).json()["timings"]
    assert (timings["prompt_n"], timings["prompt_per_token_ms"]) == (0, None)
    assert (timings["predicted_n"], timings["predicted_ms"]) == (1, 0.0)
    assert timings["predicted_per_second"] is None


@pytest.mark.anyio
@pytest.mark.parametrize("fault", [{"drop_rate": 1.0}, {"no_done_rate": 1.0}, {"empty_rate": 1.0}])
async def test_faults_that_cut_a_stream_send_no_timings(fault: dict[str, float]) -> None:
    config = dataclasses.replace(SimConfig(ttft_ms=5.0, itl_ms=1.0, seed=1), **fault)
    body = {"messages": MESSAGES, "max_tokens": 4, "stream_options": {"include_usage": True}}
    with anyio.fail_after(10):
        async with simulator(config) as client:
            try:
                response = await client.post(CHAT, json={**body, "stream": True})
                text = response.text
            except httpx.RemoteProtocolError as exc:  # the dropped stream
                text = str(exc)
            metrics = parse_metrics((await client.get("/metrics")).text)
    assert '"timings"' not in text
    assert metrics["llamacpp:tokens_predicted_total"] == 0  # counters add up timings sent


@pytest.mark.anyio
async def test_metrics_show_the_queue_then_add_up_every_response() -> None:
    """One slot, four requests at once: three wait, and their wait is not prefill."""
    config = SimConfig(ttft_ms=50.0, itl_ms=10.0, slots=1, batch_itl_factor=0.0)
    body = {"messages": MESSAGES, "max_tokens": 10}
    timings: list[dict[str, Any]] = []
    seen: list[dict[str, float]] = []
    with anyio.fail_after(15):
        async with simulator(config) as client:
            start = time.perf_counter()

            async def one() -> None:
                timings.append((await client.post(CHAT, json=body)).json()["timings"])

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(one)
                while len(timings) < 4:  # ~0.56 s of work, one request at a time
                    response = await client.get("/metrics")
                    seen.append(parse_metrics(response.text))
                    await anyio.sleep(0.02)
            wall_s = time.perf_counter() - start
            response = await client.get("/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4"
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    kinds = {name: family.type for name, family in families.items()}
    assert kinds == {
        "llamacpp:prompt_tokens": "counter",
        "llamacpp:prompt_seconds": "counter",
        "llamacpp:tokens_predicted": "counter",
        "llamacpp:tokens_predicted_seconds": "counter",
        "llamacpp:requests_processing": "gauge",
        "llamacpp:requests_deferred": "gauge",
    }
    assert all(family.documentation for family in families.values())

    assert max(m["llamacpp:requests_deferred"] for m in seen) == 3
    assert max(m["llamacpp:requests_processing"] for m in seen) == 1
    after = parse_metrics(response.text)
    assert after["llamacpp:requests_deferred"] == after["llamacpp:requests_processing"] == 0
    assert after["llamacpp:prompt_tokens_total"] == 4 * 4
    assert after["llamacpp:tokens_predicted_total"] == 4 * 10
    prompt_s = sum(t["prompt_ms"] for t in timings) / 1e3
    predicted_s = sum(t["predicted_ms"] for t in timings) / 1e3
    assert after["llamacpp:prompt_seconds_total"] == pytest.approx(prompt_s, abs=1e-5)
    assert after["llamacpp:tokens_predicted_seconds_total"] == pytest.approx(predicted_s, abs=1e-5)
    # The last of the four waited for three others, yet every prefill is about 50 ms.
    assert all(49.9 <= t["prompt_ms"] < 250 for t in timings)
    assert wall_s > 2 * prompt_s


# -- end to end through loadbench ------------------------------------------------------------

QUEUEING = """
    name = "serverside"
    [target.simulate]
    ttft_ms = 50
    itl_ms = 10
    slots = 2
    [[models]]
    name = "sim-model"
    [prompts]
    items = ["one two three", "four five"]
    [request]
    max_tokens = 16
    [load]
    concurrency = [2, 6]
    requests = 24
    warmup = 1
    seed = 1
"""


def test_a_run_against_the_simulator_splits_ttft_and_scrapes_its_metrics(
    write_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    """Each request takes ~0.2 s of a slot: c=6 keeps four waiting for ~2.5 s."""
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "loadbench", "run", write_scenario(QUEUEING), "-o", out, "-q"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    stages = {s["label"]: s for s in orjson.loads(out.read_bytes())["stages"]}
    for stage in stages.values():
        assert stage["requests"]["failed"] == 0, stage["errors"]
        latency = stage["latency_ms"]
        assert latency["server_prefill"]["count"] == latency["ttft"]["count"] == 24
        assert latency["ttft_outside_prefill"]["count"] == 24
        assert latency["server_decode"]["count"] == 24
        assert 49 <= latency["server_prefill"]["p50"] < 200  # the queue is not prefill
    alone = stages["c=2"]["latency_ms"]["ttft_outside_prefill"]["p50"]
    queued = stages["c=6"]["latency_ms"]["ttft_outside_prefill"]["p50"]
    assert queued > max(150, 3 * alone), (alone, queued)
    metrics = stages["c=6"]["server_metrics"]
    assert metrics["peak"]["llamacpp:requests_deferred"] > 0
    assert metrics["peak"]["llamacpp:requests_processing"] == 2
    assert metrics["delta"]["llamacpp:tokens_predicted_total"] >= 24 * 16
