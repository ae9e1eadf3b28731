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
import math
import random
from collections.abc import Iterator, Sequence
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
    offsets_ns: tuple[int, ...]  # open loop: due offset of unit i from the stage start
    prompt_order: tuple[int, ...]  # request i uses prompts[prompt_order[i % len(...)]]
    # A unit is one request, or one session of ``turns`` requests (indices u*turns + t):
    # closed loop keeps ``concurrency`` sessions in flight, open loop schedules their starts.
    turns: int = 1
    ramp_s: float | None = None  # load rises over this long first; those requests are warmup
    speedup: float | None = None  # a trace's replay speed: the stage replays the trace

    @property
    def units(self) -> int:
        """Open loop: scheduled units (requests, or session starts)."""
        return len(self.offsets_ns)

    @property
    def max_streams(self) -> int:
        """The most requests this stage can have in flight (sockets it may need)."""
        if self.mode is LoadMode.RATE:
            return self.max_concurrency or len(self.offsets_ns)
        return self.concurrency or 1

    @property
    def label(self) -> str:
        if self.speedup is not None:
            return f"trace x{self.speedup:g}"
        if self.mode is LoadMode.RATE:
            return f"rate={self.rate:g}/s"
        return f"c={self.concurrency}"


def plan_stages(s: Scenario, trace_ns: Sequence[int] = ()) -> tuple[StagePlan, ...]:
    """One stage per model (outer) and per load value (inner), in the file's order.

    ``trace_ns``: a trace's due offsets, already sped up (``loadbench.workload.schedule``);
    with a trace each model gets one stage that replays it, whatever ``[load]`` lists.
    """
    load = s.load
    if s.workload is not None and s.workload.trace is not None:
        return tuple(plan_trace(s, model, trace_ns) for model in s.models)
    values: tuple[int, ...] | tuple[float, ...] = (
        load.rate if load.mode is LoadMode.RATE else load.concurrency
    )
    stages: list[StagePlan] = []
    for model in s.models:
        for value in values:
            stages.append(plan_stage(s, model, value))
    return tuple(stages)


def plan_trace(s: Scenario, model: str, trace_ns: Sequence[int]) -> StagePlan:
    """The trace's schedule as an open-loop stage: the first ``warmup`` entries warm up,
    then ``requests`` entries, or every entry due within ``duration_s``, or all of it."""
    load = s.load
    warmup = min(load.warmup, len(trace_ns))
    offsets = tuple(trace_ns)
    if load.requests is not None:
        offsets = offsets[: warmup + load.requests]
    elif load.duration_s is not None and len(offsets) > warmup:
        end = offsets[warmup] + round(load.duration_s * _NS)
        offsets = offsets[:warmup] + tuple(o for o in offsets[warmup:] if o < end)
    span_s = (offsets[-1] - offsets[0]) / _NS if len(offsets) > 1 else 0.0
    speedup = s.workload.trace.speedup if s.workload and s.workload.trace else 1.0
    return StagePlan(
        model=model,
        mode=LoadMode.RATE,
        concurrency=None,
        rate=round(len(offsets) / span_s, 4) if span_s > 0 else float(len(offsets)),
        max_concurrency=load.max_concurrency,
        warmup=warmup,
        requests=len(offsets) - warmup,
        duration_s=None,
        offsets_ns=offsets,
        prompt_order=(),
        speedup=speedup,
    )


def plan_stage(s: Scenario, model: str, value: float) -> StagePlan:
    """One stage of ``s`` for ``model`` at one load value (a concurrency or a rate); the
    same arguments give the same plan, so a search can plan its stages one at a time."""
    load = s.load
    is_rate = load.mode is LoadMode.RATE
    label = f"rate={value:g}/s" if is_rate else f"c={value}"
    seed = f"{load.seed}:{label}"
    sessions = s.workload.sessions if s.workload is not None else None
    turns = sessions.turns if sessions is not None else 1
    warmup = -(-load.warmup // turns) * turns  # whole sessions
    offsets: tuple[int, ...] = ()
    rng = random.Random(f"{seed}:arrivals")
    ramp_s = load.ramp_s
    if is_rate:
        arrivals = _arrivals(value, load.arrival, load.burstiness, rng)
        head: list[int] = []
        if ramp_s:
            head, arrivals = _ramped(arrivals, ramp_s)
        if load.requests is not None:
            n = -(-(warmup + load.requests) // turns)
            offsets = (*head, *itertools.islice(arrivals, n))
        elif load.duration_s is not None:
            window = _offsets_for_window(warmup // turns, load.duration_s, arrivals)
            offsets = (*head, *window)
        warmup += len(head) * turns
    if load.requests is not None:
        count = warmup + load.requests
    elif is_rate:
        count = len(offsets)
    else:
        count = len(s.prompts)  # closed loop for a duration: the engine cycles one round
    prompts = 0 if s.workload is not None else len(s.prompts)
    return StagePlan(
        model=model,
        mode=load.mode,
        concurrency=None if is_rate else int(value),
        rate=float(value) if is_rate else None,
        max_concurrency=load.max_concurrency if is_rate else None,
        warmup=warmup,
        requests=load.requests,
        duration_s=load.duration_s,
        offsets_ns=offsets,
        prompt_order=_prompt_order(prompts, count, random.Random(f"{seed}:prompts")),
        turns=turns,
        ramp_s=ramp_s,
    )


def _ramped(arrivals: Iterator[int], ramp_s: float) -> tuple[list[int], Iterator[int]]:
    """The arrivals of a rate that rises linearly from 0 over ``ramp_s``, then stays: the
    ramp's own, and an iterator over every one after it.

    A time change of the steady schedule: at steady time u the ramped clock reads
    sqrt(2 u ramp_s) while u < ramp_s / 2 (the share a linear ramp delivers by its end),
    then u + ramp_s / 2. Poisson stays Poisson and gamma gaps keep their shape.
    """
    ramp_ns = ramp_s * _NS
    half_ns = ramp_ns / 2
    head: list[int] = []
    for u in arrivals:
        if u >= half_ns:
            rest = (round(v + half_ns) for v in itertools.chain((u,), arrivals))
            return head, rest
        head.append(round(math.sqrt(2 * u * ramp_ns)))
    return head, iter(())


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


def _offsets_for_window(warmup: int, duration_s: float, offsets: Iterator[int]) -> list[int]:
    """Warmup arrivals at the head, then every arrival inside the measured window.

    The window opens at the first measured arrival's due time (the warmup's span at the
    same rate) and lasts ``duration_s``: every offset is below that span + ``duration_s``.
    """
    head = [next(offsets) for _ in range(warmup)]
    first = next(offsets)
    end_ns = first + round(duration_s * _NS)
    window = [first] if first < end_ns else []
    while window and (due := next(offsets)) < end_ns:
        window.append(due)
    return [*head, *window]


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
