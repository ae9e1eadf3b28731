"""The stream-delivery diagnosis, end to end: `loadbench run` in its own process against
small servers on 127.0.0.1 that deliver their streams in the two ways the diagnosis names,
and against the simulator, which does neither; and ``foundry_local = true`` finding its
endpoint through a stand-in ``foundry`` on PATH.

The stalling server is the deterministic kind: it holds back every response on a kept-alive
connection by 40 ms (what a server with Nagle on does while it waits for the client's
delayed ACK), and answers a connection's first request at once. The real thing (Foundry
Local's runtime) is in tests/test_foundry_real.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from loadbench.metrics import StageFigures, new_histogram, record
from loadbench.results.delivery import BURST, KEEPALIVE_STALL, delivery_block

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="a /bin/sh stand-in, fork")

LOADBENCH = [sys.executable, "-m", "loadbench"]

# A raw asyncio HTTP/1.1 server: keep-alive, chunked SSE, 8 content events per answer.
SERVER = r"""
import asyncio, json, sys
MODE = sys.argv[1]

def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)

def event(content: str) -> bytes:
    body = {"choices": [{"index": 0, "delta": {"content": content}}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"

HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n")

async def handle(reader, writer):
    served = 0
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if MODE == "stall" and served:
                await asyncio.sleep(0.040)  # a reused connection waits, as for a delayed ACK
            served += 1
            events = [event(f"t{i} ") for i in range(8)] + [b"data: [DONE]\n\n"]
            if MODE == "buffer":  # the whole answer in one write, after "generating" it
                await asyncio.sleep(0.020)
                writer.write(HEAD + b"".join(chunk(e) for e in events) + b"0\r\n\r\n")
            else:
                writer.write(HEAD + chunk(events[0]))
                for e in events[1:]:
                    await writer.drain()
                    await asyncio.sleep(0.004)
                    writer.write(chunk(e))
                writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Starts the raw server in a mode; yields a function that returns its /v1 URL."""
    script = tmp_path / "server.py"
    script.write_text(SERVER, encoding="utf-8")
    procs: list[subprocess.Popen[str]] = []

    def start(mode: str) -> str:
        proc = subprocess.Popen(
            [sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout is not None
        return f"http://127.0.0.1:{int(proc.stdout.readline())}/v1"

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _scenario(tmp_path: Path, target: str, *, concurrency: int = 1, requests: int = 12) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name = "delivery"
            {target}
            [[models]]
            name = "m"
            [prompts]
            items = ["hello"]
            [request]
            max_tokens = 8
            [load]
            concurrency = [{concurrency}]
            requests = {requests}
            warmup = 0
            """
        ),
        encoding="utf-8",
    )
    return path


def _run(
    tmp_path: Path, scenario: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    out = tmp_path / "result.json"
    done = subprocess.run(
        [*LOADBENCH, "run", str(scenario), "-o", str(out), "--overwrite", "-q", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return orjson.loads(out.read_bytes()), done


def _kinds(doc: dict[str, Any]) -> list[str]:
    return [v["kind"] for s in doc["stages"] for v in s["delivery"]["verdicts"]]


def test_a_server_that_stalls_kept_alive_connections_is_named(tmp_path: Path, serve: Any) -> None:
    url = serve("stall")
    doc, done = _run(tmp_path, _scenario(tmp_path, f'[target]\nbase_url = "{url}"'))
    delivery = doc["stages"][0]["delivery"]
    assert _kinds(doc) == [KEEPALIVE_STALL]
    # The one connection was opened before the stage: its first request is the fresh one.
    assert (delivery["fresh"], delivery["reused"]) == (1, 11)
    assert delivery["ttft_reused_p50_ms"] > 40 > delivery["ttft_fresh_p50_ms"]
    assert "Nagle" in done.stderr
    assert "delayed ACK" in done.stderr
    assert "--connections fresh" in done.stderr
    assert "connections" not in doc["scenario"]["target"]  # the default, "reuse"


def test_fresh_connections_get_past_the_stall_and_show_their_connect_apart(
    tmp_path: Path, serve: Any
) -> None:
    url = serve("stall")
    scenario = _scenario(tmp_path, f'[target]\nbase_url = "{url}"')
    doc, _ = _run(tmp_path, scenario, "--connections", "fresh")
    stage = doc["stages"][0]
    assert _kinds(doc) == []
    assert (stage["delivery"]["fresh"], stage["delivery"]["reused"]) == (12, 0)
    assert stage["delivery"]["ttft_fresh_p50_ms"] < 40
    assert stage["connections"] == {"preopened": 0, "opened": 12}
    assert stage["latency_ms"]["connect"]["count"] == 12
    assert doc["scenario"]["target"]["connections"] == "fresh"


def test_a_server_that_buffers_the_stream_is_named(tmp_path: Path, serve: Any) -> None:
    url = serve("buffer")
    scenario = _scenario(tmp_path, f'[target]\nbase_url = "{url}"', concurrency=2)
    doc, done = _run(tmp_path, scenario)
    assert _kinds(doc) == [BURST]
    assert doc["stages"][0]["delivery"]["burst_share"] == 1.0
    assert "one burst" in done.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_QUICKACK is Linux's")
def test_quickack_is_set_and_recorded(tmp_path: Path, serve: Any) -> None:
    url = serve("plain")
    scenario = _scenario(tmp_path, f'[target]\nbase_url = "{url}"\nquickack = true')
    doc, _ = _run(tmp_path, scenario)
    assert doc["stages"][0]["requests"]["ok"] == 12
    assert doc["scenario"]["target"]["quickack"] is True
    assert _kinds(doc) == []


def test_the_simulator_gets_no_verdict(tmp_path: Path) -> None:
    target = "[target.simulate]\nttft_ms = 20\nitl_ms = 2\nslots = 8"
    doc, done = _run(tmp_path, _scenario(tmp_path, target, concurrency=4, requests=24))
    assert _kinds(doc) == []
    delivery = doc["stages"][0]["delivery"]
    # The cold-start probe's connection is reused; the 3 opened beside it are fresh once.
    assert (delivery["fresh"], delivery["reused"]) == (3, 21)
    assert "burst" not in done.stderr
    assert "stall" not in done.stderr


def test_foundry_local_target_asks_the_foundry_cli_for_its_url(tmp_path: Path) -> None:
    sim = subprocess.Popen(
        [*LOADBENCH, "simulate", "--port", "0", "--ttft-ms", "5", "--itl-ms", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().split()[-1]  # http://127.0.0.1:PORT/v1
        root = url.removesuffix("/v1")
        bindir = tmp_path / "bin"
        bindir.mkdir()
        stand_in = bindir / "foundry"
        stand_in.write_text(
            f'#!/bin/sh\n[ "$*" = "service status" ] || exit 64\n'
            f'echo "🟢 Model management service is running on {root}/openai/status"\n',
            encoding="utf-8",
        )
        stand_in.chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL")}
        env.pop("FOUNDRY_LOCAL_ENDPOINT", None)
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
        scenario = _scenario(tmp_path, "[target]\nfoundry_local = true", requests=4)
        doc, _ = _run(tmp_path, scenario, env=env)
        assert doc["target"]["base_url"] == url
        assert doc["stages"][0]["requests"]["ok"] == 4
        assert doc["scenario"]["target"]["foundry_local"] is True
        # Not running: exit 3 with the command that starts it.
        stand_in.write_text("#!/bin/sh\necho 'service is not running'\n", encoding="utf-8")
        done = subprocess.run(
            [*LOADBENCH, "run", str(scenario), "-o", str(tmp_path / "x.json"), "-q"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 3, done.stderr
        assert "foundry service start" in done.stderr
    finally:
        sim.kill()
        sim.wait()
        if sim.stdout is not None:
            sim.stdout.close()


def _figures(fresh_ms: list[float], reused_ms: list[float], long: int, bursts: int) -> Any:
    hs = new_histogram(), new_histogram()
    for h, values in zip(hs, (fresh_ms, reused_ms), strict=True):
        for v in values:
            record(h, round(v * 1000))
    base = StageFigures(0, 0, 0, {}, 0, 0.0, 0.0, 0.0, 0, "events", {}, {}, 0)
    return StageFigures(
        **{
            **base.__dict__,
            "ttft_fresh": hs[0],
            "ttft_reused": hs[1],
            "long_streams": long,
            "burst_streams": bursts,
        }
    )


@pytest.mark.parametrize(
    ("fresh", "reused", "long", "bursts", "kinds"),
    [
        ([2.0], [41.0, 43.0, 44.0], 0, 0, [KEEPALIVE_STALL]),
        ([2.0], [41.0, 43.0], 0, 0, []),  # too few reused to say
        ([30.0], [80.0, 85.0, 90.0], 0, 0, []),  # under 3x: queueing, not a stall
        ([2.0], [15.0, 15.0, 15.0], 0, 0, []),  # 3x but under 20 ms more
        # make demo at c=16 (8 slots): the first wave got slots, the rest queued ~0.5 s
        ([62.9] * 8, [601.1] * 26, 0, 0, []),
        ([60.0] * 8, [80.0, 150.0, 300.0, 450.0, 600.0], 0, 0, []),  # spread out: a queue
        ([], [40.0] * 5, 10, 8, [BURST]),  # 80% in one burst; no fresh reference
        ([], [], 10, 7, []),
        ([], [], 2, 2, []),  # too few long streams
    ],
)
def test_the_thresholds(
    fresh: list[float], reused: list[float], long: int, bursts: int, kinds: list[str]
) -> None:
    block = delivery_block(_figures(fresh, reused, long, bursts))
    assert block is not None
    assert [v["kind"] for v in block["verdicts"]] == kinds  # type: ignore[attr-defined]


def test_a_stage_without_the_fold_has_no_block() -> None:
    base = StageFigures(0, 0, 0, {}, 0, 0.0, 0.0, 0.0, 0, "events", {}, {}, 0)
    assert delivery_block(base) is None
