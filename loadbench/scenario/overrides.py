"""The command line's options on top of a scenario, checked like the file's own values.

Apart from the reader because they start from a ``Scenario``, not from TOML: ``--base-url``
drops the simulator and the launch, ``--concurrency`` and ``--rate`` switch the load mode.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from loadbench.errors import ScenarioError, UsageError
from loadbench.scenario.checks import Checker, is_int
from loadbench.scenario.model import LoadMode, Scenario
from loadbench.scenario.read_load import (
    MAX_CONCURRENCY,
    MAX_DURATION_S,
    MAX_STAGE_REQUESTS,
    MIN_RATE,
    stage_size_problems,
)


def apply_overrides(
    s: Scenario,
    *,
    base_url: str | None = None,
    models: Sequence[str] = (),
    concurrency: Sequence[int] = (),
    rate: Sequence[float] = (),
    requests: int | None = None,
    duration_s: float | None = None,
) -> Scenario:
    """The command line's options on top of the file, checked like the file.

    ``--base-url`` also drops ``[target.simulate]`` and ``[target.launch]``: the target is
    elsewhere. ``--concurrency`` makes the stages
    closed-loop and ``--rate`` open-loop; ``--requests`` clears ``duration_s`` and back.
    """
    return _check_overrides(
        s,
        base_url=base_url,
        models=models,
        concurrency=concurrency,
        rate=rate,
        requests=requests,
        duration_s=duration_s,
    )


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """``"1,4,16"`` from a command-line option into positive integers."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise UsageError(
            f"{option}: expected a comma-separated list of positive integers, got {text!r}"
        )
    return values


def parse_float_list(text: str, option: str) -> tuple[float, ...]:
    """``"2,8.5"`` from a command-line option into positive finite numbers."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise UsageError(
            f"{option}: expected a comma-separated list of positive numbers, got {text!r}"
        )
    return values


def _check_overrides(
    s: Scenario,
    *,
    base_url: str | None = None,
    models: Sequence[str] = (),
    concurrency: Sequence[int] = (),
    rate: Sequence[float] = (),
    requests: int | None = None,
    duration_s: float | None = None,
) -> Scenario:
    """``scenario.apply_overrides``, which documents what each option replaces."""
    c = Checker()
    target, load, chosen = s.target, s.load, s.models
    if base_url is not None:
        url = c.url("--base-url", base_url, override=True)
        if url is not None:
            target = dataclasses.replace(target, base_url=url, simulate=None, launch=None)
    if models:
        for i, name in enumerate(models):
            if c.string("--model", name) is not None and name in models[:i]:
                c.expected("--model", "each model once", name)
        chosen = tuple(models)
    if concurrency and rate:
        c.add("--concurrency, --rate: expected one of them, got both")
    elif concurrency:
        for v in concurrency:
            if not (is_int(v) and 1 <= v <= MAX_CONCURRENCY):
                c.expected("--concurrency", f"positive integers up to {MAX_CONCURRENCY}", v)
        load = dataclasses.replace(
            load, mode=LoadMode.CONCURRENCY, concurrency=tuple(concurrency), rate=()
        )
    elif rate:
        want = f"positive numbers of at least {MIN_RATE:g}"
        rates = [c.number("--rate", v, low=MIN_RATE, want=want) for v in rate]
        good = tuple(r for r in rates if r is not None)
        load = dataclasses.replace(load, mode=LoadMode.RATE, rate=good, concurrency=())
    if requests is not None and duration_s is not None:
        c.add("--requests, --duration-s: expected one of them, got both")
    elif requests is not None:
        if c.integer("--requests", requests, 1, MAX_STAGE_REQUESTS) is not None:
            load = dataclasses.replace(load, requests=requests, duration_s=None)
    elif duration_s is not None:
        seconds = c.number("--duration-s", duration_s, positive=True, high=MAX_DURATION_S)
        if seconds is not None:
            load = dataclasses.replace(load, duration_s=seconds, requests=None)
    if not c.problems:
        c.problems.extend(stage_size_problems(load))
    if c.problems:
        raise ScenarioError("command line", c.problems)
    return dataclasses.replace(s, target=target, models=chosen, load=load)
