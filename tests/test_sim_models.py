"""The simulator as several models: listing, 404, broken models, scripted answers, judges.

Over real sockets on 127.0.0.1; the scenario's ``[target.simulate] models`` read and turned
into a ``SimConfig`` the way the runner does it. Timing is asserted only as a lower bound a
simulated delay cannot beat, several times the other model's.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from loadbench.errors import ScenarioError
from loadbench.scenario import load_scenario
from loadbench.scenario.model import SimulatedModel
from loadbench.sim.server import (
    SimConfig,
    SimModel,
    _parse_args,
    model_args,
    parse_model_arg,
    serve,
)

CHAT = "/v1/chat/completions"
MODELS = (
    SimModel(
        "fast", ttft_ms=1, itl_ms=1, n_params=494_000_000, size=520_000_000, n_ctx_train=32768
    ),
    SimModel("slow", ttft_ms=300, itl_ms=1),
    SimModel("poet", ttft_ms=1, itl_ms=1, answer="roses are red"),
    SimModel("judge", ttft_ms=1, itl_ms=1, verdicts=("4", "Score: 5", "no idea")),
)
MULTI = SimConfig(ttft_ms=5, itl_ms=1, models=MODELS, broken_models=("broken",))


@asynccontextmanager
async def simulator(config: SimConfig) -> AsyncIterator[httpx.AsyncClient]:
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, config)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False
        ) as client:
            yield client
        tg.cancel_scope.cancel()


def body(model: str, max_tokens: int = 5, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


def streamed_text(raw: str) -> tuple[str, str | None]:
    """The content of an SSE stream and its last finish_reason."""
    text, finish = "", None
    for line in raw.splitlines():
        if not line.startswith("data: {"):
            continue
        choice = json.loads(line[6:])["choices"]
        if choice:
            text += choice[0]["delta"].get("content", "")
            finish = choice[0]["finish_reason"] or finish
    return text, finish


@pytest.mark.anyio
async def test_the_default_is_one_model_answering_any_name() -> None:
    async with simulator(SimConfig(ttft_ms=1, itl_ms=1)) as client:
        listing = (await client.get("/v1/models")).content
        assert listing == (
            b'{"object":"list","data":[{"id":"sim-model","object":"model","owned_by":"loadbench"}]}'
        )
        answer = await client.post(CHAT, json=body("whatever-you-like"))
        assert answer.status_code == 200
        assert answer.json()["model"] == "whatever-you-like"


@pytest.mark.anyio
async def test_listing_has_every_model_and_llamacpp_meta_where_given() -> None:
    async with simulator(MULTI) as client:
        data = (await client.get("/v1/models")).json()["data"]
    assert [m["id"] for m in data] == ["fast", "slow", "poet", "judge", "broken"]
    assert data[0]["meta"] == {"n_params": 494_000_000, "size": 520_000_000, "n_ctx_train": 32768}
    assert all("meta" not in m for m in data[1:])


@pytest.mark.anyio
async def test_unlisted_model_is_404_and_broken_model_is_500() -> None:
    async with simulator(MULTI) as client:
        missing = await client.post(CHAT, json=body("nope"))
        broken = await client.post(CHAT, json=body("broken", stream=True))
        ok = await client.post(CHAT, json=body("fast"))
        stats = (await client.get("/stats")).json()
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "model 'nope' not found"
    assert broken.status_code == 500
    assert "broken" in broken.json()["error"]["message"]
    assert ok.status_code == 200
    assert stats["outcomes"]["bad_request"] == 1
    assert stats["outcomes"]["http_500"] == 1
    assert stats["outcomes"]["ok"] == 1


@pytest.mark.anyio
async def test_each_model_keeps_its_own_time_to_first_token() -> None:
    async with simulator(MULTI) as client:
        started = time.perf_counter()
        await client.post(CHAT, json=body("slow", 1))
        slow_s = time.perf_counter() - started
    assert slow_s >= 0.3  # a sleep_until deadline never fires early


@pytest.mark.anyio
async def test_a_scripted_answer_streams_its_words_in_order_repeating() -> None:
    async with simulator(MULTI) as client:
        streamed = await client.post(CHAT, json=body("poet", 5, stream=True))
        whole = (await client.post(CHAT, json=body("poet", 4))).json()
    assert streamed_text(streamed.text) == ("roses are red roses are ", "length")
    assert whole["choices"][0]["message"]["content"] == "roses are red roses "
    assert whole["usage"]["completion_tokens"] == 4


@pytest.mark.anyio
async def test_a_judge_cycles_its_verdicts_and_stops_after_each() -> None:
    async with simulator(MULTI) as client:
        got = []
        for stream in (True, False, True, True):
            answer = await client.post(CHAT, json=body("judge", 10, stream=stream))
            if stream:
                got.append(streamed_text(answer.text))
            else:
                choice = answer.json()["choices"][0]
                got.append((choice["message"]["content"], choice["finish_reason"]))
                assert answer.json()["usage"]["completion_tokens"] == 2
        cut = await client.post(CHAT, json=body("judge", 1, stream=True))
    assert got == [("4 ", "stop"), ("Score: 5 ", "stop"), ("no idea ", "stop"), ("4 ", "stop")]
    assert streamed_text(cut.text) == ("Score: ", "length")  # max_tokens cuts a verdict


def test_model_flags_round_trip_through_the_child_command_line() -> None:
    args = model_args(MODELS, ("broken",))
    config, _, _ = _parse_args(args)
    assert config.models == MODELS
    assert config.broken_models == ("broken",)


@pytest.mark.parametrize(
    ("text", "model"),
    [
        ("qwen", SimModel("qwen")),
        ("qwen:40:8", SimModel("qwen", 40.0, 8.0)),
        ("phi-4-mini:5", SimModel("phi-4-mini:5")),
        ("phi-4-mini:5:40:8.5", SimModel("phi-4-mini:5", 40.0, 8.5)),
        ('{"name": "j", "verdicts": ["4"]}', SimModel("j", verdicts=("4",))),
    ],
)
def test_model_flag_forms(text: str, model: SimModel) -> None:
    assert parse_model_arg(text) == model


def test_bad_models_are_every_one_reported() -> None:
    config = SimConfig(
        models=(
            SimModel("a", ttft_ms=-1),
            SimModel("a"),
            SimModel("", answer="x", verdicts=("y",)),
            SimModel("b", verdicts=("",), size=-3),
        ),
        broken_models=("",),
    )
    problems = config.validate()
    assert problems == [
        "models[0].ttft_ms: expected a number >= 0, got -1",
        "models[1].name: 'a' is listed twice",
        "models[2].name: expected a non-empty string, got ''",
        "models[2]: expected answer or verdicts, not both",
        "models[3].size: expected an integer >= 0, got -3",
        "models[3].verdicts: expected a list of non-empty strings, got ('',)",
        "broken_models[0]: expected a non-empty string, got ''",
    ]


SCENARIO = """
name = "models"
models = ["qwen2.5-0.5b"]
prompts = {items = ["hi"]}
load = {concurrency = 1, requests = 1}
[target.simulate]
ttft_ms = 5
broken_models = ["mistral-7b"]
models = [
  "plain",
  {name = "qwen2.5-0.5b", ttft_ms = 40, itl_ms = 8, n_params = 494000000},
  {name = "judge", verdicts = ["4", "Score: 5", "no idea"]},
  {name = "poet", answer = "roses are red"},
]
"""


def test_scenario_models_become_the_simulators(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO, encoding="utf-8")
    spec = load_scenario(path, env={}).target.simulate
    assert spec is not None
    assert spec.models == (
        SimulatedModel("plain"),
        SimulatedModel("qwen2.5-0.5b", ttft_ms=40.0, itl_ms=8.0, n_params=494000000),
        SimulatedModel("judge", verdicts=("4", "Score: 5", "no idea")),
        SimulatedModel("poet", answer="roses are red"),
    )
    assert spec.broken_models == ("mistral-7b",)
    config = SimConfig(**dataclasses.asdict(spec))  # as cli.runner builds it
    assert config.validate() == []
    assert config.models[1] == SimModel("qwen2.5-0.5b", 40.0, 8.0, n_params=494000000)
    assert config.models[2].verdicts == ("4", "Score: 5", "no idea")
    json.dumps(dataclasses.asdict(config))  # the result file's target.simulator


def test_scenario_model_problems_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        """
name = "bad"
models = ["a"]
[target.simulate]
broken_models = [3]
models = [
  {name = "a", ttft_ms = -1, answer = "x", verdicts = ["y"]},
  {ttft_ms = 1},
  {name = "b", colour = "red", size = 1.5},
  {name = "b"},
  7,
]
""",
        encoding="utf-8",
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, env={})
    problems = info.value.problems
    assert "target.simulate.broken_models[0]: expected a non-empty string, got 3" in problems
    assert "target.simulate.models[0].ttft_ms: expected a number >= 0, got -1" in problems
    assert "target.simulate.models[0]: expected answer or verdicts, not both" in problems
    assert any(p.startswith("target.simulate.models[1]: expected a model name") for p in problems)
    assert "target.simulate.models[2]: unknown key 'colour'" in problems
    assert any(
        p.startswith("target.simulate.models[2].size: expected an integer") for p in problems
    )
    assert any(p.startswith("target.simulate.models[4]: expected a model name") for p in problems)
