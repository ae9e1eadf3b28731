"""The plan: every stage of a scenario, and every request's due time, before the run.

Pure: values in, values out. The engine only waits and sends, so a schedule can be read,
tested and reproduced without a server. Open-loop due times are offsets from the stage's
start (``start + offset``, never "sleep a gap after the last one"), so a late send does
not push every later one back: it is counted as lag instead (coordinated omission).

Each stage draws from its own generator seeded by the scenario's seed and the stage's
load (``"1:rate=2/s:arrivals"``), not by its position or its model: a stage rerun alone
(``--rate 2``) gets the same schedule it had in the sweep, and every model of a scenario
sees the same arrivals and prompt order, so differences between them are the models'.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

from loadbench.scenario import Arrival, LoadMode, Scenario

__all__ = ["StagePlan", "arrival_offsets_ns", "plan_stage", "plan_stages"]

_NS = 1_000_000_000


@dataclass(frozen=True)
class StagePlan:
    model: str
    mode: LoadMode
    concurrency: int | None  # closed loop only
    rate: float | None  # requests/s, open loop only
    max_concurrency: int | None  # open loop only; None: no cap
    warmup: int  # the first ``warmup`` request indices are warmup
    requests: int | None  # measured requests (after warmup) when count-bounded
    duration_s: float | None  # measured window when duration-bounded
    offsets_ns: tuple[int, ...]  # open loop: due offset of request i from the stage start
    prompt_order: tuple[int, ...]  # request i uses prompts[prompt_order[i % len(...)]]

    @property
    def max_streams(self) -> int:
        """The most requests this stage can have in flight (sockets it may need)."""
        if self.mode is LoadMode.RATE:
            return self.max_concurrency or len(self.offsets_ns)
        return self.concurrency or 1

    @property
    def label(self) -> str:
        if self.mode is LoadMode.RATE:
            return f"rate={self.rate:g}/s"
        return f"c={self.concurrency}"


def plan_stages(s: Scenario) -> tuple[StagePlan, ...]:
    """One stage per model (outer) and per load value (inner), in the file's order."""
    load = s.load
    values: tuple[int, ...] | tuple[float, ...] = (
        load.rate if load.mode is LoadMode.RATE else load.concurrency
    )
    stages: list[StagePlan] = []
    for model in s.models:
        for value in values:
            stages.append(plan_stage(s, model, value))
    return tuple(stages)


def plan_stage(s: Scenario, model: str, value: float) -> StagePlan:
    """One stage of ``s`` for ``model`` at one load value (a concurrency or a rate); the
    same arguments give the same plan, so a search can plan its stages one at a time."""
    load = s.load
    is_rate = load.mode is LoadMode.RATE
    label = f"rate={value:g}/s" if is_rate else f"c={value}"
    seed = f"{load.seed}:{label}"
    offsets: tuple[int, ...] = ()
    rng = random.Random(f"{seed}:arrivals")
    if is_rate and load.requests is not None:
        n = load.warmup + load.requests
        offsets = arrival_offsets_ns(n, value, load.arrival, load.burstiness, rng)
    elif is_rate and load.duration_s is not None:
        offsets = _offsets_for_window(
            load.warmup, load.duration_s, value, load.arrival, load.burstiness, rng
        )
    if load.requests is not None:
        count = load.warmup + load.requests
    elif is_rate:
        count = len(offsets)
    else:
        count = len(s.prompts)  # closed loop for a duration: the engine cycles one round
    return StagePlan(
        model=model,
        mode=load.mode,
        concurrency=None if is_rate else int(value),
        rate=float(value) if is_rate else None,
        max_concurrency=load.max_concurrency if is_rate else None,
        warmup=load.warmup,
        requests=load.requests,
        duration_s=load.duration_s,
        offsets_ns=offsets,
        prompt_order=_prompt_order(len(s.prompts), count, random.Random(f"{seed}:prompts")),
    )


def arrival_offsets_ns(
    n: int, rate: float, arrival: Arrival, burstiness: float, rng: random.Random
) -> tuple[int, ...]:
    """Due offsets in ns of ``n`` arrivals at ``rate``/s on average, the first at 0.

    ``constant``: exactly ``i / rate``. ``poisson``: exponential gaps. ``gamma``: gaps from
    a gamma distribution of shape ``burstiness`` and mean ``1 / rate`` (vLLM's convention:
    burstiness 1 is Poisson, below 1 burstier, above 1 steadier; the gap CV is
    ``1 / sqrt(burstiness)``). Non-decreasing; the same ``rng`` state gives the same tuple.
    """
    if n < 0 or not rate > 0 or not burstiness > 0:
        raise ValueError(f"need n >= 0, rate > 0 and burstiness > 0, got {n}, {rate}, {burstiness}")
    offsets = _arrivals(rate, arrival, burstiness, rng)
    return tuple(next(offsets) for _ in range(n))


def _offsets_for_window(
    warmup: int,
    duration_s: float,
    rate: float,
    arrival: Arrival,
    burstiness: float,
    rng: random.Random,
) -> tuple[int, ...]:
    """Warmup arrivals at the head, then every arrival inside the measured window.

    The window opens at the first measured arrival's due time (the warmup's span at the
    same rate) and lasts ``duration_s``: every offset is below that span + ``duration_s``.
    """
    offsets = _arrivals(rate, arrival, burstiness, rng)
    head = [next(offsets) for _ in range(warmup)]
    first = next(offsets)
    end_ns = first + round(duration_s * _NS)
    window = [first] if first < end_ns else []
    while window and (due := next(offsets)) < end_ns:
        window.append(due)
    return (*head, *window)


def _arrivals(
    rate: float, arrival: Arrival, burstiness: float, rng: random.Random
) -> Iterator[int]:
    """Endless due offsets in ns; random gaps are summed in float seconds, each rounded."""
    if arrival is Arrival.CONSTANT:
        for i in itertools.count():
            yield round(i * _NS / rate)  # from i, not summed: no drift over a long stage
    t = 0.0
    while True:
        yield round(t * _NS)
        if arrival is Arrival.POISSON:
            t += rng.expovariate(rate)
        else:
            t += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))


def _prompt_order(prompts: int, count: int, rng: random.Random) -> tuple[int, ...]:
    """Shuffled rounds of every prompt index, enough to cover ``count`` requests."""
    if prompts < 1:
        return ()
    order: list[int] = []
    while len(order) < max(count, 1):
        round_ = list(range(prompts))
        rng.shuffle(round_)
        order.extend(round_)
    return tuple(order[: max(count, 1)])
