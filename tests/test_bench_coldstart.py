"""The cold-start benchmark's exact-timing C server (``benchmarks/cserver``): it builds, loadbench
reads its stream as it is, and its stamps pair up with the client's, request for request.
Skipped where it cannot be built (no C compiler, not Linux). About a second; the binary is
cached in ~/.cache/loadbench/cserver after the first build."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import anyio
import pytest

import loadbench.http.client

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
FAST = (5.0, 2.0, 4)  # TTFT ms, ITL ms, tokens: a short stream, not the benchmark's


@pytest.fixture(scope="module")
def coldstart() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("section_coldstart")


def test_c_server_streams_what_loadbench_reads_and_stamps_pair(coldstart: ModuleType) -> None:
    build = importlib.import_module("cserver.build")
    procs = importlib.import_module("procs")
    try:
        binary = build.build()
    except build.Unavailable as exc:
        pytest.skip(str(exc))
    children = procs.Children(pin=False, prio=False)
    try:
        with coldstart.c_server(binary, children, FAST) as plain_srv:
            plain = anyio.run(coldstart._cell, plain_srv.base_url, 4, True, False, FAST)
        with coldstart._stamps_read(), coldstart.c_server(binary, children, FAST) as srv:
            paired = anyio.run(coldstart._cell, srv.base_url, 4, True, True, FAST)
    finally:
        children.stop_all()
    assert loadbench.http.client.StreamState is coldstart._PLAIN_STATE  # the hook is undone
    for out in (plain, paired):
        assert (out["ok"], out["failed"]) == (4, 0)
        assert (out["preopened"], out["paid"]) == (4, 0)  # the wave's connections pre-opened
    # Every measured request paired with the server's stamps (the warm-up left out).
    assert paired["unpaired"] == 0
    assert paired["req_path"] is not None
    assert paired["srv_late"] is not None
    assert paired["lag_last"] is not None
    # The server's own report: the warm-up and 4 measured requests, each token timed.
    for report in (plain_srv.report, srv.report):
        assert report["requests"] == 5
        assert report["timed_events"] == 5 * FAST[2]
