"""Token lengths drawn from a ``LengthDist``: the same seed, the same lengths, on any machine.

Only ``random.Random`` and integer arithmetic, so a scenario's lengths do not change with
numpy's version or the platform. The rules for impossible parameters are on the data
(``LengthDist.problems``) because the scenario reader, which comes first in the import
order, checks them; ``problems`` here is the same check for callers of this room.
"""

from __future__ import annotations

import random

# Through the package, not ``loadbench.scenario.workload_model``: see the room's __init__.
from loadbench.scenario import Dist, LengthDist

__all__ = ["draw", "draws", "problems"]


def draw(dist: LengthDist, rng: random.Random) -> int:
    """One length. A normal draw is rounded, then clamped into [min, max] rather than drawn
    again, so the work per draw is bounded (GuideLLM clamps the same way)."""
    if dist.dist is Dist.FIXED:
        return dist.value
    if dist.dist is Dist.UNIFORM:
        return rng.randint(dist.min, dist.max)
    value = round(rng.gauss(dist.mean, dist.stddev)) if dist.stddev > 0 else round(dist.mean)
    return min(dist.max, max(dist.min, value))


def draws(dist: LengthDist, count: int, seed: int) -> tuple[int, ...]:
    rng = random.Random(seed)
    return tuple(draw(dist, rng) for _ in range(count))


def problems(dist: LengthDist, key: str) -> list[str]:
    return dist.problems(key)
