"""What `loadbench run` adds for stream delivery: the connection options over the scenario
file, Foundry Local's endpoint when the file says ``foundry_local = true`` and gives no URL,
and each stage's delivery verdicts as warnings (the verdicts are results.delivery's)."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from loadbench.errors import UsageError


def with_connection_options(scenario: Any, connections: str | None, quickack: bool) -> Any:
    """``--connections`` and ``--quickack`` beat the file; quickack off Linux is exit 2."""
    target = scenario.target
    target = dataclasses.replace(
        target, connections=connections or target.connections, quickack=quickack or target.quickack
    )
    if target.quickack and not sys.platform.startswith("linux"):
        raise UsageError(f"--quickack: TCP_QUICKACK exists on Linux only, not on {sys.platform}")
    return dataclasses.replace(scenario, target=target)


def target_url(target: Any) -> str:
    """The file's (or an override's) URL, else Foundry Local's: a ``foundry_local`` target
    with none asks ``foundry service status``, and fails with exit 3 and the command to run."""
    if target.base_url is not None:
        return str(target.base_url)
    from loadbench.models import find_endpoint

    return find_endpoint()


def delivery_warnings(document: dict[str, Any]) -> list[str]:
    """Each stage's stream-delivery verdicts, one sentence each, named by model and stage."""
    return [
        f"{s['model']} {s['label']}: {v['text']}"
        for s in document["stages"]
        for v in s.get("delivery", {}).get("verdicts", ())
    ]
