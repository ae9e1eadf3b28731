"""The simulator keeps up with workloads: /tokenize, prefill that grows with the prompt,
answers that stop early, and a prefix cache. Real sockets on 127.0.0.1.

The timing claims compare a 200 ms prefill with a 5 ms one, so a loaded machine that wakes
late shifts both and the difference still holds; the exact figures are the server's own
``timings``, which the schedule fixes.
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
from loadbench.sim.prompts import BLOCK_WORDS, PrefixCache, count_words, token_ids
from loadbench.sim.server import SimConfig, serve
from loadbench.workload import probe_server

CHAT = "/v1/chat/completions"
FAST = SimConfig(ttft_ms=5.0, itl_ms=1.0, batch_itl_factor=0.0, seed=1)
WORDS = [f"w{i}" for i in range(400)]  # 400 prompt tokens, each word its own


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def simulator(config: SimConfig = FAST) -> AsyncIterator[httpx.AsyncClient]:
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, config)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(10), trust_env=False
        ) as client:
            yield client
        tg.cancel_scope.cancel()


def chat(text: str, max_tokens: int = 1, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, **extra}


async def streamed(client: httpx.AsyncClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every JSON event of one streamed response (usage asked for), ``[DONE]`` left out."""
    options = {"stream": True, "stream_options": {"include_usage": True}}
    response = await client.post(CHAT, json={**body, **options})
    assert response.status_code == 200
    blocks = [b.removeprefix("data: ") for b in response.text.split("\n\n") if b]
    assert blocks[-1] == "[DONE]"
    return [json.loads(b) for b in blocks[:-1]]


async def timed(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """A whole answer of one token: the seconds it took (about its TTFT) and its body."""
    start = time.perf_counter()
    response = await client.post(CHAT, json=body)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200
    return elapsed, response.json()


# -- /tokenize -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_tokenize_counts_words_in_both_servers_shapes() -> None:
    text = "Hello, world.  Two\nlines\there"
    with anyio.fail_after(5):
        async with simulator() as client:
            llama = await client.post("/tokenize", json={"content": text, "add_special": False})
            vllm = await client.post(
                "/tokenize", json={"model": "m", "prompt": text, "add_special_tokens": False}
            )
            messages = await client.post("/tokenize", json={"model": "m", **chat(text)})
            empty = await client.post("/tokenize", json={"content": ""})
    assert llama.status_code == vllm.status_code == 200
    assert llama.json() == {"tokens": token_ids(text.split())}
    assert len(llama.json()["tokens"]) == count_words(text) == 5
    assert vllm.json() == {"tokens": llama.json()["tokens"], "count": 5}
    assert messages.json()["count"] == 5
    assert empty.json() == {"tokens": []}
    assert token_ids(["a", "b", "a"])[0] == token_ids(["a", "b", "a"])[2]  # stable ids


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"text": "hello"}', "missing required field 'content'"),
        (b'{"content": 3}', "'content' must be a string"),
        (b'{"model": "m", "prompt": {"a": 1}}', "'prompt' must be a string"),
    ],
)
async def test_tokenize_refuses_a_bad_body_with_a_json_error(body: bytes, message: str) -> None:
    with anyio.fail_after(5):
        async with simulator() as client:
            response = await client.post("/tokenize", content=body)
            wrong_method = await client.get("/tokenize")
            stats = (await client.get("/stats")).json()
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert wrong_method.status_code == 405
    assert stats["requests"] == 0  # /tokenize is not a completion request


@pytest.mark.anyio
async def test_usage_prompt_tokens_is_the_tokenize_count_the_workload_sizes_with() -> None:
    """``ServerTokenizer`` counts "system\\n\\nuser"; the server sums the messages' words."""
    system, user = "You are terse. Answer in one line.", "How far is the moon, roughly?"
    with anyio.fail_after(5):
        async with simulator() as client:
            base = str(client.base_url) + "/v1"

            def sized() -> tuple[int, str]:  # the workload's sync client, off the loop
                with httpx.Client(trust_env=False, timeout=5) as sync:
                    tokenizer, line = probe_server(sync, base, "sim-model")
                    assert tokenizer is not None, line
                    return tokenizer.count(f"{system}\n\n{user}"), tokenizer.flavour

            count, flavour = await anyio.to_thread.run_sync(sized)
            messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            _, answer = await timed(client, {"messages": messages, "max_tokens": 1})
            text = await client.post("/v1/completions", json={"prompt": user, "max_tokens": 1})
    assert flavour == "llama.cpp"
    assert answer["usage"]["prompt_tokens"] == count == count_words(system) + count_words(user)
    assert text.json()["usage"]["prompt_tokens"] == count_words(user)


# -- prefill grows with the prompt ---------------------------------------------------------


@pytest.mark.anyio
async def test_prefill_grows_with_prompt_tokens() -> None:
    config = dataclasses.replace(FAST, prefill_ms_per_token=0.5)
    with anyio.fail_after(10):
        async with simulator(config) as client:
            await timed(client, chat("warm up"))
            short_s, short = await timed(client, chat(""))
            long_s, long = await timed(client, chat(" ".join(WORDS)))
    assert (short["timings"]["prompt_n"], long["timings"]["prompt_n"]) == (0, 400)
    assert long["timings"]["cache_n"] == 0
    assert 5.0 <= short["timings"]["prompt_ms"] < 150
    assert 205.0 <= long["timings"]["prompt_ms"] < 400  # 5 ms + 400 x 0.5 ms, never less
    assert 0.15 < long_s - short_s < 0.4
    assert "prompt_tokens_details" not in long["usage"]  # only with the prefix cache on


# -- answers that stop early ---------------------------------------------------------------


@pytest.mark.anyio
async def test_early_stop_ends_with_stop_and_fewer_tokens_unless_ignore_eos() -> None:
    config = dataclasses.replace(FAST, early_stop_rate=1.0)
    with anyio.fail_after(10):
        async with simulator(config) as client:
            events = await streamed(client, chat("go", 20))
            whole = (await client.post(CHAT, json=chat("go", 20))).json()
            full = await streamed(client, chat("go", 20, ignore_eos=True))
            full_whole = (await client.post(CHAT, json=chat("go", 20, ignore_eos=True))).json()
            one = (await client.post(CHAT, json=chat("go", 1))).json()
            stats = (await client.get("/stats")).json()

    def summed(events: list[dict[str, Any]]) -> tuple[int, str, int]:
        """Content tokens sent, the finish_reason, and usage's completion_tokens."""
        tokens = [e for e in events if e["choices"] and e["choices"][0]["delta"].get("content")]
        finish = [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1]
        return len(tokens), finish, events[-1]["usage"]["completion_tokens"]

    sent, finish, completion = summed(events)
    assert 1 <= sent < 20
    assert (finish, completion) == ("stop", sent)
    assert whole["choices"][0]["finish_reason"] == "stop"
    assert whole["usage"]["completion_tokens"] == count_words(whole["choices"][0]["message"])
    assert whole["usage"]["completion_tokens"] < 20
    assert whole["timings"]["predicted_n"] == whole["usage"]["completion_tokens"]
    assert summed(full) == (20, "length", 20)
    assert full_whole["usage"]["completion_tokens"] == 20
    assert full_whole["choices"][0]["finish_reason"] == "length"
    assert one["choices"][0]["finish_reason"] == "length"  # one token cannot stop earlier
    assert stats["outcomes"]["ok"] == 5


@pytest.mark.anyio
async def test_early_stops_are_seeded_and_leave_the_fault_draws_alone() -> None:
    """The n-th request gets the same fault with early stops on or off, and the same seed
    gives the same lengths."""

    async def run(config: SimConfig) -> list[tuple[int, int | None]]:
        out = []
        async with simulator(config) as client:
            for _ in range(12):
                response = await client.post(CHAT, json=chat("go", 30))
                ok = response.status_code == 200
                out.append(
                    (response.status_code, ok and response.json()["usage"]["completion_tokens"])
                )
        return out

    faulty = dataclasses.replace(FAST, error_rate=0.5, seed=7)
    with anyio.fail_after(10):
        plain = await run(faulty)
        early = await run(dataclasses.replace(faulty, early_stop_rate=0.5))
        again = await run(dataclasses.replace(faulty, early_stop_rate=0.5))
    assert [s for s, _ in plain] == [s for s, _ in early]
    assert {s for s, _ in plain} == {200, 500}
    assert early == again
    lengths = [n for s, n in early if s == 200]
    assert 30 in lengths
    assert any(isinstance(n, int) and n < 30 for n in lengths)


# -- the prefix cache ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_repeated_prompt_hits_the_prefix_cache_and_prefills_faster() -> None:
    config = dataclasses.replace(FAST, prefill_ms_per_token=0.5, prefix_cache=True)
    prompt = " ".join(WORDS)
    with anyio.fail_after(10):
        async with simulator(config) as client:
            await timed(client, chat("warm up"))
            first_s, first = await timed(client, chat(prompt))
            second_s, second = await timed(client, chat(prompt))
            other_s, other = await timed(client, chat(" ".join(reversed(WORDS))))
            events = await streamed(client, chat(prompt, 3))
            stats = (await client.get("/stats")).json()
            metrics = (await client.get("/metrics")).text

    def cached(body: dict[str, Any]) -> int:
        n: int = body["usage"]["prompt_tokens_details"]["cached_tokens"]
        assert body["timings"]["cache_n"] == n
        assert body["timings"]["prompt_n"] == body["usage"]["prompt_tokens"] - n
        return n

    assert (cached(first), cached(other)) == (0, 0)
    assert cached(second) == 399  # every block, less the one token always computed
    assert first["timings"]["prompt_ms"] >= 205.0
    assert second["timings"]["prompt_ms"] < 150
    assert first_s - second_s > 0.1
    assert other_s - second_s > 0.1
    assert events[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 399}
    assert events[-1]["timings"]["cache_n"] == 399
    assert stats["prefix_cache_hit_tokens"] == 2 * 399
    assert "llamacpp:prompt_tokens_cached_total 798" in metrics


@pytest.mark.anyio
async def test_a_later_turn_hits_the_cache_on_its_history_answer_included() -> None:
    """Turn 2 re-sends turn 1's question and answer: all its full blocks are cached."""
    config = dataclasses.replace(FAST, prefix_cache=True)
    system = " ".join(WORDS[:40])
    with anyio.fail_after(10):
        async with simulator(config) as client:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]
            turn1 = (await client.post(CHAT, json={"messages": messages, "max_tokens": 30})).json()
            answer = turn1["choices"][0]["message"]["content"]
            messages += [
                {"role": "assistant", "content": answer},
                {"role": "user", "content": "and then?"},
            ]
            turn2 = (await client.post(CHAT, json={"messages": messages, "max_tokens": 3})).json()
    history = 40 + 1 + 30  # system, question, answer: 71 words, 4 full blocks
    assert turn1["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert turn2["usage"]["prompt_tokens"] == history + 2
    assert turn2["usage"]["prompt_tokens_details"]["cached_tokens"] == 4 * BLOCK_WORDS


def test_the_prefix_cache_counts_leading_blocks_and_forgets_the_oldest() -> None:
    words = [str(i) for i in range(3 * BLOCK_WORDS)]
    cache = PrefixCache(capacity=8)
    assert cache.admit("m", words) == 0
    assert cache.admit("m", words) == 3 * BLOCK_WORDS - 1
    assert cache.admit("other model", words) == 0
    changed = [*words[:BLOCK_WORDS], "x", *words[BLOCK_WORDS + 1 :]]
    assert cache.admit("m", changed) == BLOCK_WORDS  # a miss ends the prefix: chained
    assert cache.admit("m", words[: BLOCK_WORDS - 1]) == 0  # no full block
    assert len(cache.blocks) == 8
    cache.admit("third", words)  # evicts m's blocks 2 and 3 (block 1 was just used), and one
    assert len(cache.blocks) == 8
    assert cache.admit("m", words) == BLOCK_WORDS


# -- [target.simulate] ---------------------------------------------------------------------

SCENARIO = """\
[target.simulate]
{keys}
[[models]]
name = "m"
[prompts]
items = ["hello"]
[load]
concurrency = [1]
requests = 4
"""


def problems_of(tmp_path: Path, keys: str) -> tuple[str, ...]:
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(keys=keys), encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, env={})
    assert info.value.exit_code == 2
    return info.value.problems


def test_the_reader_takes_the_workload_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    keys = "prefill_ms_per_token = 0.25\nearly_stop_rate = 0.9\nprefix_cache = true\n"
    path.write_text(SCENARIO.format(keys=keys + "error_rate = 0.5"), encoding="utf-8")
    spec = load_scenario(path, env={}).target.simulate
    assert spec is not None  # early_stop_rate is no fault: 0.9 + 0.5 is not over the sum
    assert (spec.prefill_ms_per_token, spec.early_stop_rate, spec.prefix_cache) == (0.25, 0.9, True)
    config = SimConfig(**dataclasses.asdict(spec))  # as cli.target builds it
    assert config.validate() == []


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        (
            "prefill_ms_per_token = -1",
            "target.simulate.prefill_ms_per_token: expected a number >= 0, got -1",
        ),
        (
            'prefill_ms_per_token = "fast"',
            "target.simulate.prefill_ms_per_token: expected a number >= 0, got 'fast'",
        ),
        (
            "early_stop_rate = 1.5",
            "target.simulate.early_stop_rate: expected a number from 0 to 1, got 1.5",
        ),
        ('prefix_cache = "yes"', "target.simulate.prefix_cache: expected true or false, got 'yes'"),
        ("prefix_cache = 1", "target.simulate.prefix_cache: expected true or false, got 1"),
    ],
)
def test_the_reader_refuses_bad_workload_values(tmp_path: Path, keys: str, problem: str) -> None:
    assert problems_of(tmp_path, keys) == (problem,)


def test_simconfig_checks_the_workload_fields_too() -> None:
    bad = SimConfig(prefill_ms_per_token=-1, early_stop_rate=2, prefix_cache=1)  # type: ignore[arg-type]
    assert bad.validate() == [
        "prefill_ms_per_token: expected a number >= 0, got -1",
        "early_stop_rate: expected a number between 0 and 1, got 2",
        "prefix_cache: expected true or false, got 1",
    ]
    assert SimConfig(early_stop_rate=1.0, error_rate=1.0).validate() == []
