"""Sample answers and judge verdicts against the simulator, over real sockets.

The simulator answers every prompt with the same word sequence ("the model streams tokens
while bench measures latency ..."), one word per event, and sends usage when asked.
"""

from __future__ import annotations

import socket

import anyio
import pytest

from loadbench.errors import TargetUnreachable
from loadbench.models import collect_samples, judge_samples
from loadbench.models.samples import bounded
from loadbench.sim.server import SimConfig
from tests.conftest import Sim, start_sim

pytestmark = pytest.mark.anyio

PROMPTS = [("p1", "What is TTFT?"), ("why", "Why measure p95?")]
ANSWER = "the model streams tokens while bench measures latency "


async def _samples(url: str, **options: object) -> list[dict[str, object]]:
    kwargs: dict[str, object] = {
        "max_tokens": 8,
        "temperature": 0.0,
        "extra": {},
        "api_key": None,
        "timeout_s": 10.0,
    }
    kwargs.update(options)
    return await collect_samples(url, "sim-model", PROMPTS, **kwargs)  # type: ignore[arg-type]


async def test_each_prompt_is_asked_once_with_its_whole_answer(sim: Sim) -> None:
    samples = await _samples(sim.url)
    assert [s["prompt_id"] for s in samples] == ["p1", "why"]
    assert [s["prompt"] for s in samples] == [p for _, p in PROMPTS]
    for s in samples:
        assert s["answer"] == ANSWER
        assert s["truncated"] is False
        assert s["output_tokens"] == 8  # the usage chunk's completion_tokens
        assert s["error"] is None
        ttft, e2e = s["ttft_ms"], s["e2e_ms"]
        assert isinstance(ttft, float)
        assert isinstance(e2e, float)
        assert 0 < ttft <= e2e


async def test_the_answer_is_cut_at_limit_bytes_and_says_so(sim: Sim) -> None:
    samples = await _samples(sim.url, max_tokens=40, limit_bytes=20)
    for s in samples:
        assert s["answer"] == ANSWER.encode()[:20].decode()
        assert s["truncated"] is True
        assert s["output_tokens"] == 40  # the stream was still read to its end


def test_bounded_never_cuts_inside_a_character() -> None:
    assert bounded("héllo", 2) == ("h", True)  # é is two bytes
    assert bounded("héllo", 3) == ("hé", True)
    assert bounded("héllo", 6) == ("héllo", False)


async def test_a_failing_server_gives_errors_as_values() -> None:
    async with anyio.create_task_group() as tg:
        sim = await start_sim(SimConfig(ttft_ms=1, itl_ms=1, error_rate=1.0, seed=1), tg)
        samples = await _samples(sim.url)
        tg.cancel_scope.cancel()
    assert [str(s["error"])[:8] for s in samples] == ["HTTP 500", "HTTP 500"]
    assert all(s["answer"] == "" and s["e2e_ms"] is None for s in samples)


async def test_a_server_that_is_not_there_is_target_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TargetUnreachable, match="cannot reach"):
        await _samples(f"http://127.0.0.1:{port}/v1")


async def test_judging_against_the_simulator_finds_no_verdict(sim: Sim) -> None:
    samples = await _samples(sim.url)
    samples.append({**samples[0], "prompt_id": "bad", "answer": "", "error": "timed out"})
    scores = await judge_samples(
        sim.url, "judge", samples, {"p1": ["latency"]}, api_key=None, timeout_s=10.0
    )
    assert [s["prompt_id"] for s in scores] == ["p1", "why", "bad"]
    assert {s["method"] for s in scores} == {"judge"}
    assert [s["score"] for s in scores] == [None, None, None]  # words, not a number
    assert scores[0]["note"] == "unparseable"
    assert str(scores[0]["verdict"]).startswith("the model streams tokens")
    assert len(str(scores[0]["verdict"])) <= 200
    assert scores[2]["verdict"] is None
    assert scores[2]["note"] == "no answer to judge: timed out"
