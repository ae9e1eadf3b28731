"""Workers as Ray actors, against a local Ray this test starts (and only it stops).

Ray is the optional ``[ray]`` extra: without it these tests are skipped. The local Ray
runs with usage statistics and the dashboard off, so it sends nothing beyond loopback.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadbench.errors import TargetUnreachable
from loadbench.run import plan_stages
from loadbench.scenario import Scenario, load_scenario
from loadbench.sim import SimConfig, simulator_process
from loadbench.workers import Fleet, run_stages_in_workers

pytestmark = [pytest.mark.ray, pytest.mark.anyio]

# Set before Ray starts: no usage report, no dashboard, the control server on loopback.
QUIET = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
}


@pytest.fixture(scope="module", autouse=True)
def ray_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Set before Ray is first imported, since it reads some of these only then. Its node
    address becomes 127.0.0.1 (else it takes the machine's own address), and its
    dashboard process, started even without the dashboard for usage statistics, finds a
    ``~/ray_bootstrap_config.yaml`` (in a HOME of its own) instead of probing the cloud
    metadata address 169.254.169.254."""
    home = tmp_path_factory.mktemp("ray-home")
    (home / "ray_bootstrap_config.yaml").write_text("{}\n", encoding="utf-8")
    env = {**QUIET, "HOME": str(home)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def ray() -> Iterator[Any]:
    """A local Ray of this test's own, stopped by ``shutdown`` (never ``ray stop``)."""
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2, include_dashboard=False, logging_level="WARNING", _node_ip_address="127.0.0.1"
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with simulator_process(SimConfig(ttft_ms=5, itl_ms=2, slots=64, seed=1)) as handle:
        yield handle.base_url


def scenario(tmp_path: Path) -> Scenario:
    path = tmp_path / "s.toml"
    path.write_text(
        textwrap.dedent(
            """\
            name = "r"
            [target]
            base_url = "http://127.0.0.1:1/v1"
            [[models]]
            name = "sim-model"
            [prompts]
            items = ["a", "bb", "ccc"]
            [request]
            max_tokens = 16
            [load]
            concurrency = [4]
            requests = 40
            warmup = 2
            """
        ),
        encoding="utf-8",
    )
    return load_scenario(str(path))


async def test_an_unreachable_ray_address_exits_3_naming_it(tmp_path: Path) -> None:
    """First in the file: the address is checked before a Ray of this process is used."""
    pytest.importorskip("ray")
    s = scenario(tmp_path)
    with pytest.raises(TargetUnreachable, match=r"cannot reach Ray at 127\.0\.0\.1:1\b") as info:
        await run_stages_in_workers(
            s, plan_stages(s), "http://127.0.0.1:1/v1", Fleet(), workers=1, ray="127.0.0.1:1"
        )
    assert info.value.exit_code == 3


async def test_two_ray_actors_count_what_the_server_saw(
    ray: Any, sim_url: str, tmp_path: Path
) -> None:
    s = scenario(tmp_path)
    before = httpx.get(sim_url + "/stats", trust_env=False).json()["requests"]  # noqa: ASYNC210
    fleet = Fleet()
    await run_stages_in_workers(s, plan_stages(s), sim_url, fleet, workers=2, ray="auto")
    (stage,) = fleet.state.stages
    after = httpx.get(sim_url + "/stats", trust_env=False).json()["requests"]  # noqa: ASYNC210
    assert (stage.figures.sent, stage.figures.ok, stage.figures.warmup) == (40, 40, 2)
    assert after - before == 42
    assert fleet.to_dict()["transport"] == "ray"
    assert [w.status for w in fleet.workers] == ["done", "done"]
    assert ray.is_initialized()  # the test's Ray: used, not stopped
