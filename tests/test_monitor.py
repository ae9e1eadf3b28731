"""The harness's view of itself and of the server."""

from __future__ import annotations

import os
import sys

import anyio
import anyio.lowlevel
import pytest

from loadbench.observe.monitor import ClientMonitor, ServerMonitor, find_listening_pid, judge
from loadbench.sim.server import SimConfig, simulator_process


def test_judge_flags_a_busy_or_laggy_client() -> None:
    assert judge(20.0, 0.5) is None
    busy = judge(85.0, 0.5)
    assert busy is not None
    assert "client CPU 85%" in busy
    laggy = judge(10.0, 7.5)
    assert laggy is not None
    assert "event-loop lag p99 7.5 ms > 2 ms" in laggy


def test_lag_that_matters_scales_with_the_token_gaps() -> None:
    """2.2 ms late is noise against 35 ms token gaps, and a blur against 1 ms ones."""
    assert judge(3.0, 2.2, itl_p50_ms=35.0) is None
    assert judge(3.0, 2.2, itl_p50_ms=1.0) is not None
    slow = judge(3.0, 4.0, itl_p50_ms=35.0)
    assert slow is not None
    assert "event-loop lag p99 4.0 ms > 3.5 ms" in slow


@pytest.mark.anyio
async def test_client_monitor_measures_a_busy_loop() -> None:
    monitor = ClientMonitor()
    monitor.start()
    async with anyio.create_task_group() as tg:
        tg.start_soon(monitor.sample_lag)
        await anyio.sleep(0.1)
        deadline = anyio.current_time() + 0.3
        while anyio.current_time() < deadline:  # hog the loop: 30 ms between checkpoints
            end = anyio.current_time() + 0.03
            while anyio.current_time() < end:
                pass
            await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()
    health = monitor.finish()
    assert health.cpu_percent > 30
    assert health.loop_lag_ms_max >= 10
    assert health.bottleneck


def test_server_monitor_samples_the_simulator() -> None:
    with simulator_process(SimConfig()) as sim:
        port = int(sim.base_url.rsplit(":", 1)[1].split("/")[0])
        found = find_listening_pid("127.0.0.1", port)
        if sys.platform == "darwin":  # macOS hides other processes' sockets without root
            assert found in (sim.pid, None)
        else:  # Linux shows a user their own children's sockets: the answer is exact
            assert found == sim.pid
        monitor = ServerMonitor(sim.pid)

        async def watch() -> None:
            with anyio.move_on_after(1.2):
                await monitor.sample()

        anyio.run(watch)
        usage = monitor.finish()
    assert usage.pid == sim.pid
    assert usage.samples >= 2
    assert usage.rss_mb_max > 5


def test_server_monitor_of_a_gone_process_says_so() -> None:
    usage = ServerMonitor(2**22 + os.getpid()).finish()
    assert usage.samples == 0
    assert usage.note is not None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_listening_pid_comes_from_proc_for_both_families_and_none_when_unheard() -> None:
    import os
    import socket

    with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6:
        v4.bind(("127.0.0.1", 0))
        v4.listen()
        v6.bind(("::1", 0))
        v6.listen()
        assert find_listening_pid("127.0.0.1", v4.getsockname()[1]) == os.getpid()
        assert find_listening_pid("::1", v6.getsockname()[1]) == os.getpid()
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))  # bound, never listening
            assert find_listening_pid("127.0.0.1", closed.getsockname()[1]) is None
    assert find_listening_pid("10.0.0.1", 80) is None  # not a local address
