"""One stage's load cut into worker shards, so that together they are the one plan.

Pure: a :class:`StagePlan` in, one shard per worker out (``None`` for a worker with no
share of that stage). Closed loop splits the concurrency, remainder to the lowest ranks,
and a count-bounded stage's requests (and warmup) in proportion to each share, each worker
taking a contiguous block of the one prompt order. Open loop gives worker ``k`` every
``N``-th due time of the one planned schedule (k6's execution segments, interleaved):
the union of the shards is the single-process schedule, offset for offset, with the same
requests marked warmup and the same prompt for each due time.
"""

from __future__ import annotations

import dataclasses
import os

from loadbench.run import StagePlan
from loadbench.scenario import LoadMode

__all__ = ["auto_workers", "shard_plan", "split_evenly"]


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` shares that differ by at most one, remainder to the first."""
    if parts < 1 or total < 0:
        raise ValueError(f"need parts >= 1 and total >= 0, got {parts} and {total}")
    base, extra = divmod(total, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


def _in_proportion(total: int, weights: list[int]) -> list[int]:
    """``total`` split like ``weights`` (largest remainder, ties to the lowest rank)."""
    whole = sum(weights)
    if whole == 0:
        return [0] * len(weights)
    shares = [total * w // whole for w in weights]
    left = total - sum(shares)
    by_remainder = sorted(range(len(weights)), key=lambda k: (-(total * weights[k] % whole), k))
    for k in by_remainder[:left]:
        shares[k] += 1
    return shares


def shard_plan(plan: StagePlan, workers: int) -> list[StagePlan | None]:
    """Worker ``k``'s part of ``plan`` at index ``k``; None where it has nothing to send."""
    if workers < 1:
        raise ValueError(f"need at least one worker, got {workers}")
    if plan.mode is LoadMode.RATE:
        return [_open_shard(plan, k, workers) for k in range(workers)]
    return _closed_shards(plan, workers)


def _open_shard(plan: StagePlan, k: int, n: int) -> StagePlan | None:
    offsets = plan.offsets_ns[k::n]
    if not offsets:
        return None
    warmup = len(range(k, plan.warmup, n))
    cap = plan.max_concurrency
    # A cap below the worker count still leaves each worker one stream (None is no cap).
    shard_cap = None if cap is None else max(1, split_evenly(cap, n)[k])
    return dataclasses.replace(
        plan,
        max_concurrency=shard_cap,
        warmup=warmup,
        requests=None if plan.requests is None else len(offsets) - warmup,
        offsets_ns=offsets,
        prompt_order=plan.prompt_order[k::n],
    )


def _closed_shards(plan: StagePlan, n: int) -> list[StagePlan | None]:
    concurrency = split_evenly(plan.concurrency or 1, n)
    warmups = _in_proportion(plan.warmup, concurrency)
    order = plan.prompt_order
    if plan.requests is None:  # duration-bounded: every worker cycles the prompts, rotated
        out: list[StagePlan | None] = []
        for k, c in enumerate(concurrency):
            turn = k * len(order) // n
            out.append(
                None
                if c == 0
                else dataclasses.replace(
                    plan, concurrency=c, warmup=warmups[k], prompt_order=order[turn:] + order[:turn]
                )
            )
        return out
    requests = _in_proportion(plan.requests, concurrency)
    shards: list[StagePlan | None] = []
    warm_at, measured_at = 0, plan.warmup
    for c, w, r in zip(concurrency, warmups, requests, strict=True):
        indices = [*range(warm_at, warm_at + w), *range(measured_at, measured_at + r)]
        warm_at, measured_at = warm_at + w, measured_at + r
        if c == 0 or not indices:
            shards.append(None)
            continue
        shards.append(
            dataclasses.replace(
                plan,
                concurrency=c,
                warmup=w,
                requests=r,
                prompt_order=tuple(order[i % len(order)] for i in indices),
            )
        )
    return shards


def auto_workers(*, local_server: bool, cpus: int | None = None) -> int:
    """``workers = "auto"``: one per core, less one left to a server on this machine."""
    count = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, count - 1 if local_server else count)
