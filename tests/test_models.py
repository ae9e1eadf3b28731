"""Model names resolved like Foundry Local's SDK, and ``loadbench check`` against real servers.

The id lists are the shapes Foundry Local's ``/v1/models`` returns (several device variants
and versions of one model); the check runs against the simulator over real sockets, and
against a tiny key-checking server for the API-key path.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from loadbench.cli import main
from loadbench.errors import TargetUnreachable
from loadbench.models import AmbiguousModel, check_models, resolve
from loadbench.sim.server import SimConfig, simulator_process
from tests.conftest import Sim, start_sim, threaded_server

FOUNDRY = (
    "qwen2.5-0.5b-instruct-generic-cpu:3",
    "qwen2.5-0.5b-instruct-generic-cpu:4",
    "qwen2.5-0.5b-instruct-cuda-gpu:4",
    "qwen2.5-0.5b-instruct-generic-gpu:4",
    "phi-4-mini-instruct-generic-cpu:5",
    "Mistral-7B-Instruct-v0.2-generic-cpu:2",
    "qwen2.5-coder-0.5b-instruct-generic-cpu:4",
    "deepseek-r1-7b-npu:1",
    "deepseek-r1-7b-generic-cpu:2",
)


@pytest.mark.parametrize(
    ("asked", "served_as", "how"),
    [
        ("qwen2.5-0.5b-instruct-generic-cpu:3", "qwen2.5-0.5b-instruct-generic-cpu:3", "exact"),
        ("QWEN2.5-0.5B-INSTRUCT-CUDA-GPU:4", "qwen2.5-0.5b-instruct-cuda-gpu:4", "exact"),
        ("qwen2.5-0.5b-instruct-generic-cpu", "qwen2.5-0.5b-instruct-generic-cpu:4", "version"),
        ("qwen2.5-0.5b-instruct-generic-cpu:", "qwen2.5-0.5b-instruct-generic-cpu:4", "version"),
        ("phi-4-mini", "phi-4-mini-instruct-generic-cpu:5", "alias"),
        ("mistral-7b", "Mistral-7B-Instruct-v0.2-generic-cpu:2", "alias"),
        ("deepseek-r1-7b", "deepseek-r1-7b-npu:1", "alias"),  # NPU first, whatever the version
        ("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-generic-cpu:4", "alias"),
        ("gemma-2-2b", "gemma-2-2b", "unlisted"),
    ],
)
def test_names_resolve_like_the_foundry_local_sdk(asked: str, served_as: str, how: str) -> None:
    found = resolve(asked, FOUNDRY)
    assert (found.served_as, found.how) == (served_as, how)


def test_gpu_beats_generic_gpu_beats_cpu() -> None:
    assert resolve("qwen2.5-0.5b-instruct", FOUNDRY).served_as == (
        "qwen2.5-0.5b-instruct-cuda-gpu:4"
    )
    cpu_only = [m for m in FOUNDRY if "gpu" not in m]
    assert resolve("qwen2.5-0.5b-instruct", cpu_only).served_as == (
        "qwen2.5-0.5b-instruct-generic-cpu:4"
    )
    no_cuda = [m for m in FOUNDRY if "cuda" not in m]
    assert resolve("qwen2.5-0.5b-instruct", no_cuda).served_as == (
        "qwen2.5-0.5b-instruct-generic-gpu:4"
    )


def test_an_alias_over_different_models_is_ambiguous_and_lists_them() -> None:
    with pytest.raises(AmbiguousModel) as caught:
        resolve("qwen2.5", FOUNDRY)
    message = str(caught.value)
    assert "qwen2.5-coder-0.5b-instruct-generic-cpu:4" in message
    assert "qwen2.5-0.5b-instruct-cuda-gpu:4" in message
    assert caught.value.exit_code == 2


def test_resolution_says_what_it_picked() -> None:
    assert resolve("phi-4-mini", FOUNDRY).describe() == (
        "phi-4-mini -> phi-4-mini-instruct-generic-cpu:5"
    )
    assert resolve("phi-4-mini-instruct-generic-cpu:5", FOUNDRY).describe() == (
        "phi-4-mini-instruct-generic-cpu:5"
    )


# --- the check, over real sockets ---------------------------------------------------------


@pytest.mark.anyio
async def test_check_lists_resolves_and_asks_each_model() -> None:
    async with anyio.create_task_group() as tg:
        sim: Sim = await start_sim(SimConfig(ttft_ms=20, itl_ms=1, slots=4, seed=1), tg)
        listing, results = await check_models(sim.url, ["sim-model", "not-served"])
        tg.cancel_scope.cancel()
    assert listing.ids == ("sim-model",)
    present, missing = results
    assert (present.listed, present.answered, present.error) == (True, True, None)
    assert present.tokens == 16
    assert present.answer.startswith("the model")
    assert present.ttft_ms is not None
    assert 15 <= present.ttft_ms < 1000
    assert missing.listed is False  # the simulator answers any name; the list says otherwise


@pytest.mark.anyio
async def test_a_failing_model_is_reported_not_raised() -> None:
    async with anyio.create_task_group() as tg:
        sim = await start_sim(SimConfig(ttft_ms=5, itl_ms=1, error_rate=1.0, seed=1), tg)
        _, (result,) = await check_models(sim.url, ["sim-model"])
        tg.cancel_scope.cancel()
    assert result.answered is False
    assert result.error is not None
    assert result.error.startswith("HTTP 500")


@pytest.mark.anyio
async def test_nothing_listening_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TargetUnreachable):
        await check_models(f"http://127.0.0.1:{port}/v1", ["m"], timeout_s=2)


class _KeyedServer(BaseHTTPRequestHandler):
    """Answers only with ``Authorization: Bearer sekrit``, as vLLM --api-key does."""

    def _authorised(self) -> bool:
        if self.headers.get("authorization") == "Bearer sekrit":
            return True
        self.send_response(401)
        self.send_header("content-length", "0")
        self.end_headers()
        return False

    def do_GET(self) -> None:
        if self._authorised():
            body = json.dumps({"object": "list", "data": [{"id": "keyed-model"}]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        if self._authorised():
            event = {"choices": [{"delta": {"content": "hello"}}]}
            body = f"data: {json.dumps(event)}\n\ndata: [DONE]\n\n".encode()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def keyed_url() -> Iterator[str]:
    with threaded_server(_KeyedServer) as url:
        yield url


@pytest.mark.anyio
async def test_the_model_list_is_asked_with_the_api_key(keyed_url: str) -> None:
    listing, (result,) = await check_models(keyed_url, ["keyed-model"], api_key="sekrit")
    assert listing.ids == ("keyed-model",)
    assert (result.listed, result.answered, result.answer) == (True, True, "hello")
    listing, (result,) = await check_models(keyed_url, ["keyed-model"])
    assert listing.ids is None
    assert listing.problem is not None
    assert "401" in listing.problem
    assert result.answered is False
    assert result.error == "HTTP 401"


# --- the command --------------------------------------------------------------------------


def _check(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["check", *args], env=env)
    return result.exit_code, result.output


def test_check_command_exit_codes_and_json(
    tmp_path: Path, write_scenario: Callable[..., Path]
) -> None:
    config = SimConfig(ttft_ms=5, itl_ms=1, seed=1)
    with simulator_process(config) as handle:
        out = tmp_path / "check.json"
        code, text = _check("--base-url", handle.base_url, "--model", "sim-model", "-o", str(out))
        assert code == 0, text
        assert "sim-model" in text
        doc = json.loads(out.read_text())
        assert doc["listed"] == ["sim-model"]
        assert doc["models"][0]["answered"] is True
    failing = write_scenario(
        """
        [target.simulate]
        ttft_ms = 5
        itl_ms = 1
        error_rate = 1.0
        seed = 1
        [[models]]
        name = "sim-model"
        [prompts]
        items = ["hello"]
        [load]
        concurrency = [1]
        requests = 1
        """
    )
    code, text = _check(str(failing))
    assert code == 1, text
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, text = _check("--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m")
    assert code == 3
    assert "cannot reach" in text
    code, text = _check("--model", "m", env={"LOADBENCH_BASE_URL": ""})
    assert code == 2
    assert "--base-url" in text


def test_check_command_reads_the_key_from_the_named_variable(keyed_url: str) -> None:
    args = ("--base-url", keyed_url, "--model", "keyed-model", "--api-key-env", "LB_TEST_KEY")
    code, text = _check(*args, env={"LB_TEST_KEY": "sekrit"})
    assert code == 0, text
    assert "sekrit" not in text
    code, text = _check(*args, env={"LB_TEST_KEY": ""})
    assert code == 2
    assert "LB_TEST_KEY" in text
