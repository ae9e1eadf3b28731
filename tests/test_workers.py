"""Workers: shards that add up to the one plan, an exact merge, and every way a worker ends.

The load runs against the simulator in a child process (real sockets, its own core), so
its ``GET /stats`` counts what the server really received from all workers together.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loadbench.workers.driver
from loadbench import __version__
from loadbench.metrics import encode, merge
from loadbench.run import StagePlan, plan_stages, prompt_figures
from loadbench.scenario import LoadMode, Scenario, load_scenario
from loadbench.sim import SimConfig, simulator_process
from loadbench.workers import (
    EXIT_DEGRADED,
    Fleet,
    WorkerRefused,
    auto_workers,
    run_stages_in_workers,
    shard_plan,
)
from loadbench.workers.wire import HEADER_BYTES, ShardResult, frame, plan_to_dict, unframe_length

pytestmark = pytest.mark.anyio

HEARTBEAT_S = 0.5  # short, so that loss and lease tests take a second or two, not many


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with simulator_process(SimConfig(ttft_ms=5, itl_ms=2, slots=64, seed=1)) as handle:
        yield handle.base_url


def stats(url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(url + "/stats", trust_env=False).json()
    return data


def write(tmp_path: Path, load: str) -> Scenario:
    path = tmp_path / "s.toml"
    path.write_text(
        textwrap.dedent(
            """\
            name = "w"
            [target]
            base_url = "http://127.0.0.1:1/v1"
            [[models]]
            name = "sim-model"
            [prompts]
            items = ["a", "bb", "ccc", "dddd", "eeeee"]
            [request]
            max_tokens = 16
            [load]
            """
        )
        + textwrap.dedent(load),
        encoding="utf-8",
    )
    return load_scenario(str(path))


# --- shards -------------------------------------------------------------------------------


def _open_plan(n: int, warmup: int, prompts: int, seed: int) -> StagePlan:
    import random

    rng = random.Random(seed)
    offsets = tuple(sorted(rng.randrange(0, 10**9) for _ in range(n)))
    return StagePlan(
        model="m",
        mode=LoadMode.RATE,
        concurrency=None,
        rate=5.0,
        max_concurrency=None,
        warmup=min(warmup, n),
        requests=n - min(warmup, n),
        duration_s=None,
        offsets_ns=offsets,
        prompt_order=tuple(rng.randrange(prompts) for _ in range(n)),
    )


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 60),
    warmup=st.integers(0, 8),
    workers=st.integers(1, 7),
    seed=st.integers(0, 1000),
)
def test_open_loop_shards_union_to_the_one_schedule(
    n: int, warmup: int, workers: int, seed: int
) -> None:
    plan = _open_plan(n, warmup, 5, seed)
    union: list[tuple[int, bool, int]] = []
    for k, shard in enumerate(shard_plan(plan, workers)):
        if shard is None:
            assert not plan.offsets_ns[k::workers]
            continue
        assert shard.requests == len(shard.offsets_ns) - shard.warmup
        for j, offset in enumerate(shard.offsets_ns):
            union.append((offset, j < shard.warmup, shard.prompt_order[j]))
    expected = [
        (offset, i < plan.warmup, plan.prompt_order[i]) for i, offset in enumerate(plan.offsets_ns)
    ]
    assert sorted(union) == sorted(expected)


def test_closed_loop_shards_split_concurrency_with_the_remainder_to_the_lowest_ranks(
    tmp_path: Path,
) -> None:
    scenario = write(tmp_path, "concurrency = [5, 1]\nrequests = 23\nwarmup = 3\n")
    c5, c1 = plan_stages(scenario)
    shards = shard_plan(c5, 2)
    assert [s.concurrency for s in shards if s] == [3, 2]
    assert sum(s.requests or 0 for s in shards if s) == 23
    assert sum(s.warmup for s in shards if s) == 3
    # Every index of the one prompt order is sent once, by one worker.
    sent = sorted(p for s in shards if s for p in s.prompt_order)
    assert sent == sorted(c5.prompt_order[:26])
    assert shard_plan(c1, 2)[1] is None  # one stream cannot be cut in two


def test_auto_is_one_worker_per_core_less_one_for_a_local_server() -> None:
    assert auto_workers(local_server=True, cpus=8) == 7
    assert auto_workers(local_server=False, cpus=8) == 8
    assert auto_workers(local_server=True, cpus=1) == 1


# --- runs -----------------------------------------------------------------------------------


async def test_two_workers_count_what_the_server_saw_and_merge_exactly(
    tmp_path: Path, sim_url: str
) -> None:
    scenario = write(tmp_path, "concurrency = [1, 4]\nrequests = 30\nwarmup = 2\n")
    plans = plan_stages(scenario)
    before = stats(sim_url)["requests"]
    fleet = Fleet()
    parts: list[list[ShardResult]] = []
    ended: list[str] = []
    await run_stages_in_workers(
        scenario,
        plans,
        sim_url,
        fleet,
        workers=2,
        on_parts=lambda _plan, got: parts.append(got),
        on_stage_end=lambda r: ended.append(r.plan.label),
        heartbeat_s=HEARTBEAT_S,
    )
    stages = fleet.state.stages
    assert fleet.warnings == []
    assert ended == ["c=1", "c=4"]
    assert [len(p) for p in parts] == [1, 2]  # c=1 cannot be split: one worker sits it out
    seen = stats(sim_url)["requests"] - before
    assert seen == sum(s.figures.sent + s.figures.warmup for s in stages) == 2 * (30 + 2)
    assert all(s.figures.ok == 30 for s in stages)
    for stage, stage_parts in zip(stages, parts, strict=True):
        assert stage.plan in plans  # the one plan, not a shard
        for name, h in stage.figures.histograms.items():
            alone = merge(p.result.figures.histograms[name] for p in stage_parts)
            assert encode(h) == encode(alone)
            assert h.total_count == sum(
                p.result.figures.histograms[name].total_count for p in stage_parts
            )
        # The blocks beside the histograms merge too: what one process would have written.
        fig = stage.figures
        assert fig.preopened is not None
        assert fig.opened is not None
        assert fig.preopened == sum(p.result.figures.preopened or 0 for p in stage_parts)
        assert fig.ttft_fresh is not None
        assert fig.ttft_reused is not None
        fresh_and_reused = fig.ttft_fresh.total_count + fig.ttft_reused.total_count
        assert fresh_and_reused == 30 + 2  # every ok request, warm-ups included
        assert fig.long_streams == sum(p.result.figures.long_streams for p in stage_parts)
        assert stage.prompts is not None  # 5 prompts: per-prompt figures, merged by prompt
        assert sum(f.count for f in stage.prompts.values()) == 30
        assert stage.prompts == prompt_figures([p.prompts for p in stage_parts if p.prompts])
        for prompt, figures in stage.prompts.items():
            assert figures.count == sum(
                p.prompts[prompt][1].total_count
                for p in stage_parts
                if p.prompts and prompt in p.prompts
            )
    block = fleet.to_dict()
    assert block["count"] == 2
    assert block["degraded"] is False
    assert fleet.exit_code(allow_partial=False) == 0
    per_worker = fleet.stages[1]["per_worker"]
    assert isinstance(per_worker, list)
    assert [w["rank"] for w in per_worker] == [0, 1]
    assert all(abs(w["start_skew_ms"]) < 1000 for w in per_worker)
    assert all(_gone(p) for p in _pids(fleet))


async def test_open_loop_over_workers_sends_the_whole_schedule(
    tmp_path: Path, sim_url: str
) -> None:
    scenario = write(tmp_path, 'rate = [40]\narrival = "poisson"\nrequests = 40\nwarmup = 3\n')
    before = stats(sim_url)["requests"]
    fleet = Fleet()
    await run_stages_in_workers(
        scenario, plan_stages(scenario), sim_url, fleet, workers=2, heartbeat_s=HEARTBEAT_S
    )
    (stage,) = fleet.state.stages
    assert (stage.figures.sent, stage.figures.warmup) == (40, 3)
    assert stats(sim_url)["requests"] - before == 43
    assert stage.figures.histograms["schedule_lag"].total_count == 40


def _pids(fleet: Fleet) -> list[int]:
    return [w.pid for w in fleet.workers if w.pid is not None]


async def _run_and_do(
    scenario: Scenario, url: str, fleet: Fleet, action: Any, workers: int = 2
) -> None:
    """Runs the scenario; once every worker reported load, ``action(fleet)`` acts on one."""
    async with anyio.create_task_group() as tg:

        async def act() -> None:
            with anyio.fail_after(20):
                while not all(w.last.get("sent") for w in fleet.workers):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            action(fleet)

        tg.start_soon(act)
        await run_stages_in_workers(
            scenario, plan_stages(scenario), url, fleet, workers=workers, heartbeat_s=HEARTBEAT_S
        )


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
async def test_a_killed_worker_is_lost_and_not_retried(tmp_path: Path, sim_url: str) -> None:
    scenario = write(tmp_path, "concurrency = [4, 8]\nrequests = 400\n")
    fleet = Fleet()
    await _run_and_do(scenario, sim_url, fleet, lambda f: os.kill(_pids(f)[1], signal.SIGKILL))
    lost = fleet.workers[1]
    assert (lost.status, lost.lost_in) == ("lost", "sim-model c=4")
    assert lost.lost == "killed by signal 9"
    assert lost.last["sent"] > 0  # its last counters are kept
    assert fleet.degraded
    assert fleet.exit_code(allow_partial=False) == EXIT_DEGRADED != 0
    assert fleet.exit_code(allow_partial=True) == 0
    first, second = fleet.state.stages
    assert first.figures.sent == 200  # worker 0's half, complete; worker 1's is missing
    assert second.figures.sent == 400  # the next stage ran whole on the one worker left
    assert fleet.stages[1]["workers"] == 1
    assert any("worker 1 lost during sim-model c=4" in w for w in fleet.warnings)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP")
async def test_a_silent_worker_is_lost_after_two_heartbeats(tmp_path: Path, sim_url: str) -> None:
    scenario = write(tmp_path, "concurrency = [4]\nrequests = 300\n")
    fleet = Fleet()
    stopped: list[int] = []

    def freeze(f: Fleet) -> None:
        stopped.append(_pids(f)[0])
        os.kill(stopped[0], signal.SIGSTOP)

    try:
        await _run_and_do(scenario, sim_url, fleet, freeze)
    finally:
        if psutil.pid_exists(stopped[0]):
            os.kill(stopped[0], signal.SIGKILL)
    assert fleet.workers[0].lost == "no heartbeat for two periods"
    assert fleet.workers[1].status == "done"
    assert fleet.state.stages[0].figures.sent == 150


async def test_cancelling_stops_every_worker_and_keeps_the_merged_partial_stage(
    tmp_path: Path, sim_url: str
) -> None:
    scenario = write(tmp_path, "concurrency = [4]\nrequests = 2000\n")
    fleet = Fleet()
    with anyio.CancelScope() as scope:  # as Ctrl-C cancels the runner's event loop
        await _run_and_do(scenario, sim_url, fleet, lambda f: scope.cancel())
    (stage,) = fleet.state.stages
    assert stage.interrupted
    assert 0 < stage.figures.sent < 2000
    assert stage.figures.sent == sum(w["sent"] for w in fleet.stages[0]["per_worker"])  # type: ignore[union-attr]
    assert not fleet.degraded
    assert all(_gone(p) for p in _pids(fleet))
    fleet.close_partial(stopped="max_duration_s")  # as the runner does for a run limit
    assert fleet.state.stages[0].stopped == "max_duration_s"
    assert not fleet.state.stages[0].interrupted


async def test_version_mismatch_is_refused_by_the_worker(
    tmp_path: Path, sim_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = write(tmp_path, "concurrency = [1]\nrequests = 1\n")
    monkeypatch.setattr(loadbench.workers.driver, "__version__", "0.0.0-elsewhere")
    with pytest.raises(WorkerRefused, match=r"the driver runs 0\.0\.0-elsewhere .* runs "):
        await run_stages_in_workers(
            scenario, plan_stages(scenario), sim_url, Fleet(), workers=2, heartbeat_s=HEARTBEAT_S
        )


# --- the worker process on its own ----------------------------------------------------------


def _start_worker() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "loadbench.workers.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def _read(proc: subprocess.Popen[bytes]) -> dict[str, Any] | None:
    assert proc.stdout is not None
    header = proc.stdout.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES:
        return None
    msg: dict[str, Any] = orjson.loads(proc.stdout.read(unframe_length(header)))
    return msg


def _hello(
    url: str, version: str = __version__, lease_s: float = 2 * HEARTBEAT_S
) -> dict[str, Any]:
    return {
        "type": "hello",
        "version": version,
        "protocol": 1,
        "worker": 0,
        "workers": 1,
        "client": {
            "base_url": url,
            "api": "chat",
            "request": {"max_tokens": 16, "temperature": None, "stream": True, "extra": {}},
            "timeout_s": 10.0,
            "max_connections": 4,
            "api_key": None,
            "verify": True,
            "transport": "auto",
        },
        "prompts": ["hello"],
        "slo": [],
        "max_error_rate": None,
        "heartbeat_s": HEARTBEAT_S,
        "lease_s": lease_s,
    }


def test_the_worker_refuses_another_loadbench_version() -> None:
    with _start_worker() as proc:
        assert proc.stdin is not None
        proc.stdin.write(frame(_hello("http://127.0.0.1:1/v1", version="9.9.9")))
        proc.stdin.flush()
        msg = _read(proc)
        assert proc.wait(10) == 2
    assert msg is not None
    assert msg["type"] == "refused"
    assert "the driver runs 9.9.9 (protocol 1), worker on" in msg["reason"]
    assert f"runs {__version__}" in msg["reason"]


def _long_stage(url: str, lease_s: float = 2 * HEARTBEAT_S) -> list[bytes]:
    scenario_plan = StagePlan(
        model="sim-model",
        mode=LoadMode.CONCURRENCY,
        concurrency=4,
        rate=None,
        max_concurrency=None,
        warmup=0,
        requests=None,
        duration_s=60.0,
        offsets_ns=(),
        prompt_order=(0,),
    )
    stage = {
        "type": "stage",
        "index": 0,
        "plan": plan_to_dict(scenario_plan),
        "start_wall_ns": time.time_ns(),
    }
    return [frame(_hello(url, lease_s=lease_s)), frame(stage)]


def _requests_stop(url: str, within_s: float) -> float:
    """Seconds until the server's request count stops growing (and nothing is active)."""
    t0 = time.perf_counter()
    last = stats(url)
    while time.perf_counter() - t0 < within_s:
        time.sleep(HEARTBEAT_S)
        now = stats(url)
        if now["requests"] == last["requests"] and now["active"] == 0:
            return time.perf_counter() - t0
        last = now
    raise AssertionError(f"load still running {within_s} s after the driver went away")


def _wait_for_load(url: str) -> None:
    before = stats(url)["requests"]
    deadline = time.perf_counter() + 20
    while stats(url)["requests"] < before + 10:
        assert time.perf_counter() < deadline, "the worker sent no load"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL of the parent")
def test_a_worker_whose_parent_is_killed_stops_its_load(sim_url: str, tmp_path: Path) -> None:
    messages = tmp_path / "messages.bin"
    # A lease far longer than the test: only the end of its stdin can stop this worker.
    messages.write_bytes(b"".join(_long_stage(sim_url, lease_s=600)))
    # A stand-in driver: starts the worker, hands it a minute of load, then only sleeps.
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "w = subprocess.Popen([sys.executable, '-m', 'loadbench.workers.worker'],"
            " stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)\n"
            f"w.stdin.write(open({str(messages)!r}, 'rb').read()); w.stdin.flush()\n"
            "print(w.pid, flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
    ) as parent:
        assert parent.stdout is not None
        worker_pid = int(parent.stdout.readline())
        try:
            _wait_for_load(sim_url)
            parent.kill()
            parent.wait()
            _requests_stop(sim_url, within_s=3.0)
            deadline = time.perf_counter() + 5
            while not _gone(worker_pid):
                assert time.perf_counter() < deadline, "the orphaned worker did not exit"
                time.sleep(0.05)
        finally:
            parent.kill()
            if not _gone(worker_pid):
                os.kill(worker_pid, signal.SIGKILL)


def test_a_worker_that_hears_nothing_within_its_lease_stops(sim_url: str) -> None:
    with _start_worker() as proc:
        assert proc.stdin is not None
        for message in _long_stage(sim_url):
            proc.stdin.write(message)
        proc.stdin.flush()  # stdin stays open: a driver alive but stuck, never pinging
        try:
            _wait_for_load(sim_url)
            _requests_stop(sim_url, within_s=3.0)
            assert proc.wait(5) == 0
        finally:
            proc.kill()
