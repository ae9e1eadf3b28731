"""Timing error from paired stamps: what a client saw against what the server did.

Pure: lists of ints in, a dict of millisecond percentiles out. Both benchmark clients
(``refclient.py`` and ``lbclient.py``) keep, per request, the client's send stamp and one
stamp per token (``time.perf_counter_ns``), and the server's stamps from the stream
(``time.monotonic_ns``): ``r`` when it parsed the request and ``t`` per token write. The two
clocks are tied once per process with :func:`clock_offset_ns` (on Linux both are
CLOCK_MONOTONIC and the offset is ~0).

Definitions (all per request or per token, in ms):
  ttft          client first-token stamp - client send stamp (what a client reports)
  ttft_err      ttft - (server first write - server parse): the client's own error,
                = request path (send -> parsed) + first-token path (written -> stamped)
  req_path      server parse - client send
  itl           gap between consecutive token stamps at the client
  itl_err       itl - the server's real gap between the same two writes
  event_lag     client stamp - server write, per token (loopback + client delay)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise


@dataclass(frozen=True, slots=True)
class StampedRequest:
    sent_ns: int  # client clock
    token_ns: Sequence[int]  # client clock, one per token
    server_r_ns: int  # server clock: request parsed
    server_t_ns: Sequence[int]  # server clock, one per token: written


def clock_offset_ns(samples: int = 64) -> int:
    """``monotonic_ns() - perf_counter_ns()``, from the tightest of ``samples`` brackets."""
    best_gap = None
    offset = 0
    for _ in range(samples):
        a = time.perf_counter_ns()
        m = time.monotonic_ns()
        b = time.perf_counter_ns()
        if best_gap is None or b - a < best_gap:
            best_gap = b - a
            offset = m - (a + b) // 2
    return offset


def summary_ms(values_ns: Iterable[int]) -> dict[str, float | int | None]:
    """n, p50, p99, max (nearest rank) in ms; None when there are no values."""
    xs = sorted(values_ns)
    n = len(xs)

    def at(q: float) -> float | None:
        if not n:
            return None
        return round(xs[min(n - 1, max(0, int(q * n + 0.999999) - 1))] / 1e6, 3)

    return {"n": n, "p50": at(0.50), "p99": at(0.99), "max": at(1.0)}


def timing_errors(requests: Iterable[StampedRequest], offset_ns: int) -> dict[str, object]:
    """Per-metric summaries over every request whose stamps pair up (see the module doc)."""
    ttft: list[int] = []
    ttft_err: list[int] = []
    req_path: list[int] = []
    itl: list[int] = []
    itl_err: list[int] = []
    itl_abs_err: list[int] = []
    lag: list[int] = []
    unpaired = 0
    for rq in requests:
        c, s = rq.token_ns, rq.server_t_ns
        if not c or len(c) != len(s) or not rq.server_r_ns:
            unpaired += 1
            continue
        ttft.append(c[0] - rq.sent_ns)
        ttft_err.append((c[0] - rq.sent_ns) - (s[0] - rq.server_r_ns))
        req_path.append(rq.server_r_ns - offset_ns - rq.sent_ns)
        for k in range(len(c)):
            lag.append(c[k] - (s[k] - offset_ns))
            if k:
                gap = c[k] - c[k - 1]
                err = gap - (s[k] - s[k - 1])
                itl.append(gap)
                itl_err.append(err)
                itl_abs_err.append(abs(err))
    return {
        "requests": len(ttft),
        "unpaired": unpaired,
        "ttft_ms": summary_ms(ttft),
        "ttft_err_ms": summary_ms(ttft_err),
        "req_path_ms": summary_ms(req_path),
        "itl_ms": summary_ms(itl),
        "itl_err_ms": summary_ms(itl_err),
        "itl_abs_err_ms": summary_ms(itl_abs_err),
        "event_lag_ms": summary_ms(lag),
    }


def reported(requests: Iterable[StampedRequest]) -> dict[str, object]:
    """TTFT and ITL from the client's stamps alone: what a client would report."""
    ttft: list[int] = []
    itl: list[int] = []
    for rq in requests:
        c = rq.token_ns
        if c:
            ttft.append(c[0] - rq.sent_ns)
            itl.extend(b - a for a, b in pairwise(c))
    return {"ttft_ms": summary_ms(ttft), "itl_ms": summary_ms(itl)}
