"""``loadbench serve --adapter``: a Python model class behind an OpenAI-compatible endpoint.

The shipped example runs as a real child process (``serve`` through the CLI group) and
is checked and loaded by ``loadbench check`` and ``loadbench run`` as any server is; the
other shapes of ``generate`` (async, a coroutine, a whole string, failures) run in-process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from click.testing import CliRunner

from loadbench.cli import main
from loadbench.errors import UsageError
from loadbench.sim import SimConfig, load_adapter, serve_adapter, simulator_process

ROOT = Path(__file__).resolve().parent.parent
# ``serve`` through the real group (its error handling and exit codes), registered or not.
SHIM = (
    "from loadbench.cli import main; from loadbench.cli.serve_command import serve; "
    "main.add_command(serve); main()"
)
ECHO = "examples.echo_adapter:EchoAdapter"
CHAT = "/v1/chat/completions"


class AsyncGen:
    name = "async-gen"

    async def generate(self, prompt: str, **params: Any) -> AsyncIterator[str]:
        for word in prompt.upper().split():
            await anyio.sleep(0.001)
            yield word + " "


class Coroutine:
    async def generate(self, prompt: str, **params: Any) -> str:
        return f"{len(prompt.split())} words, max_tokens {params.get('max_tokens')}"


class Whole:
    def generate(self, prompt: str, **params: Any) -> str:
        return "one two three"


class Fails:
    def generate(self, prompt: str, **params: Any) -> str:
        raise RuntimeError("out of memory")


class FailsMidway:
    def generate(self, prompt: str, **params: Any) -> Iterator[str]:
        yield "first "
        raise RuntimeError("lost the GPU")


class NoGenerate:
    def load(self, weights_path: Path | None) -> None:
        pass


def chat(*, stream: bool, content: str = "one two three", max_tokens: int = 16) -> dict[str, Any]:
    return {
        "model": "anything",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": stream,
        "stream_options": {"include_usage": True},
    }


def events(raw: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]


def text_of(raw: str) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content", "") for e in events(raw) if e.get("choices")
    )


@asynccontextmanager
async def adapter_server(target: str) -> AsyncIterator[httpx.AsyncClient]:
    adapter, name = load_adapter(target)
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_adapter, adapter, name)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False
        ) as client:
            yield client
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_the_echo_adapter_streams_the_prompt_reversed_word_by_word() -> None:
    async with adapter_server(ECHO) as client:
        listing = (await client.get("/v1/models")).json()
        health = await client.get("/health")
        streamed = await client.post(CHAT, json=chat(stream=True, content="a b c d"))
        whole = (await client.post(CHAT, json=chat(stream=False, max_tokens=2))).json()
    assert [m["id"] for m in listing["data"]] == ["echo"]
    assert health.status_code == 200
    got = events(streamed.text)
    assert [e["choices"][0]["delta"].get("content") for e in got[1:5]] == ["d ", "c ", "b ", "a "]
    assert got[5]["choices"][0]["finish_reason"] == "stop"
    assert got[6]["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
    assert streamed.text.rstrip().endswith("data: [DONE]")
    assert whole["choices"][0]["message"]["content"] == "three two "
    assert whole["model"] == "echo"
    assert whole["usage"]["completion_tokens"] == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("target", "text"),
    [
        ("tests.test_adapter:AsyncGen", "ONE TWO THREE "),
        ("tests.test_adapter:Coroutine", "3 words, max_tokens 16"),
        ("tests.test_adapter:Whole", "one two three"),
    ],
)
async def test_every_shape_of_generate(target: str, text: str) -> None:
    async with adapter_server(target) as client:
        streamed = await client.post(CHAT, json=chat(stream=True))
        whole = await client.post(CHAT, json=chat(stream=False))
    assert text_of(streamed.text) == text
    assert whole.json()["choices"][0]["message"]["content"] == text


@pytest.mark.anyio
async def test_completions_api_too() -> None:
    async with adapter_server(ECHO) as client:
        answer = await client.post("/v1/completions", json={"prompt": "x y", "stream": True})
    texts = [e["choices"][0]["text"] for e in events(answer.text)]
    assert texts == ["y ", "x ", ""]


@pytest.mark.anyio
async def test_a_failing_generate_is_a_server_error_not_a_crash() -> None:
    async with adapter_server("tests.test_adapter:Fails") as client:
        before = await client.post(CHAT, json=chat(stream=True))
        again = await client.post(CHAT, json=chat(stream=False))
    assert before.status_code == again.status_code == 500
    assert "out of memory" in before.json()["error"]["message"]
    async with adapter_server("tests.test_adapter:FailsMidway") as client:
        midway = await client.post(CHAT, json=chat(stream=True))
        bad = await client.post(CHAT, content=b"{")
    assert midway.status_code == 200
    assert text_of(midway.text) == "first "
    assert "lost the GPU" in events(midway.text)[-1]["error"]["message"]
    assert "[DONE]" not in midway.text
    assert bad.status_code == 400


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("examples.echo_adapter", "expected MODULE:CLASS"),
        ("no_such_module_here:X", "cannot import 'no_such_module_here'"),
        ("examples.echo_adapter:Nope", "has no 'Nope'"),
        ("tests.test_adapter:NoGenerate", "NoGenerate has no generate(prompt, **params)"),
    ],
)
def test_bad_adapters_are_bad_input(target: str, problem: str) -> None:
    with pytest.raises(UsageError, match=re.escape(problem)) as info:
        load_adapter(target)
    assert info.value.exit_code == 2


def serve_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SHIM, "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_the_command_exits_2_on_a_bad_adapter() -> None:
    proc = serve_cli("--adapter", "examples.echo_adapter:Nope", "--port", "0")
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: --adapter examples.echo_adapter:Nope: module")


SCENARIO = """
name = "adapter"
models = ["echo"]
[target]
base_url = "{url}"
[prompts]
items = ["the quick brown fox", "jumps over the lazy dog"]
[request]
max_tokens = 8
[load]
concurrency = [1, 2]
requests = 4
"""


def test_check_and_run_against_the_served_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the child imports examples/ from its working directory
    command = [sys.executable, "-c", SHIM, "serve", "--adapter", ECHO]
    with simulator_process(SimConfig(), command=command) as handle:
        checked = CliRunner().invoke(
            main, ["check", "--base-url", handle.base_url, "--model", "echo"]
        )
        assert checked.exit_code == 0, checked.output
        assert "echo" in checked.output
        scenario = tmp_path / "adapter.toml"
        scenario.write_text(SCENARIO.format(url=handle.base_url), encoding="utf-8")
        out = tmp_path / "result.json"
        ran = CliRunner().invoke(main, ["run", str(scenario), "-q", "-o", str(out)])
        assert ran.exit_code == 0, ran.output
    doc = orjson.loads(out.read_bytes())
    stages = doc["stages"]
    assert [s["label"] for s in stages] == ["c=1", "c=2"]
    for stage in stages:
        assert stage["model"] == "echo"
        assert stage["requests"]["ok"] == stage["requests"]["sent"] == 4
        assert stage["tokens"]["counted_by"] == "usage"
        assert 16 <= stage["tokens"]["output"] <= 20  # 4 or 5 words an answer
