"""Write scenarios/data/sample-trace.jsonl: ~200 requests over ~60 s in the Mooncake layout.

Deterministic (a fixed seed, ``python scenarios/data/make_sample_trace.py`` rewrites the
same bytes). Bursty the way chat traffic is: a Poisson background of about 2 req/s with
three bursts of 6-10 req/s lasting a few seconds; input lengths log-normal around 600
tokens, outputs around 150; a third of the requests continue a session and reuse its
leading ``hash_ids`` blocks (512 tokens each), so a prefix cache has something to find.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

SEED = 13
DURATION_S = 60.0
BACKGROUND_RPS = 2.0
BURSTS = ((12.0, 4.0, 8.0), (31.0, 3.0, 10.0), (47.0, 5.0, 6.0))  # start s, length s, rps
BLOCK_TOKENS = 512


def _rate(t: float) -> float:
    extra = sum(rps for start, length, rps in BURSTS if start <= t < start + length)
    return BACKGROUND_RPS + extra


def rows(seed: int = SEED) -> list[dict[str, object]]:
    rng = random.Random(seed)
    peak = BACKGROUND_RPS + max(rps for _, _, rps in BURSTS)
    t, out = 0.0, []
    sessions: list[tuple[str, list[int]]] = []
    next_hash = 1000
    while True:  # thinning: a Poisson process at the peak rate, kept with p = rate(t) / peak
        t += rng.expovariate(peak)
        if t >= DURATION_S:
            break
        if rng.random() > _rate(t) / peak:
            continue
        inputs = max(16, min(8000, round(rng.lognormvariate(math.log(600), 0.6))))
        outputs = max(8, min(1024, round(rng.lognormvariate(math.log(150), 0.5))))
        blocks = math.ceil(inputs / BLOCK_TOKENS)
        if sessions and rng.random() < 0.33:
            session, shared = rng.choice(sessions)
            keep = shared[: min(len(shared), blocks - 1)]
        else:
            session, keep = f"u{len(sessions) + 1}", []
        hashes = keep + list(range(next_hash, next_hash + blocks - len(keep)))
        next_hash += blocks - len(keep)
        if not keep:
            sessions.append((session, hashes))
        out.append(
            {
                "timestamp_ms": round(t * 1000),
                "input_tokens": inputs,
                "output_tokens": outputs,
                "session_id": session,
                "hash_ids": hashes,
            }
        )
    return out


def main() -> None:
    target = Path(__file__).resolve().parent / "sample-trace.jsonl"
    with target.open("w", encoding="utf-8") as f:
        for row in rows():
            f.write(json.dumps(row) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
