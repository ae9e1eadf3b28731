"""Stream-delivery diagnosis: whether a stage's TTFT is the server's, or the way its bytes
reached this client.

Two things make a fast server look slow, or a streaming one look like a batch one, and
neither is the model: a server (or a proxy) that buffers the whole stream, so tokens arrive
in one burst (ITL ~0, TTFT ~ E2E); and a keep-alive stall, where the server writes small
pieces without TCP_NODELAY (Nagle) and waits for this client's delayed ACK (~40 ms on
Linux, up to 200 ms elsewhere) on every reused connection, while a connection's first
request, ACKed at once, is not delayed. Foundry Local's runtime showed the second
(../shared/research/foundry-local.md). Pure: figures in, words out.

"Fresh" is a connection's first request: it opened the connection, or it was the first
to use one the stage opened ahead of its window (no data has crossed it yet, so the
client still ACKs at once; measured against Foundry Local: 3.0 ms, then 41-44 ms on the
same pre-opened connection). Warm-up requests count too: with pre-opened connections,
they are often the only fresh ones. TTFT here counts from the send, not the due time.
"""

from __future__ import annotations

from loadbench.metrics import StageFigures, percentile_ms

# A burst: E2E - TTFT under max(1 ms, 5% of E2E), for this share of ok requests with
# 4+ token events, once there are at least MIN_LONG of them.
BURST_SHARE = 0.8
MIN_LONG = 3
# A stall: reused TTFT p50 over STALL_RATIO x the fresh p50 and STALL_GAP_MS more, but at
# most STALL_MAX_GAP_MS more (a delayed ACK waits ~40 ms on Linux, up to ~200 ms elsewhere),
# and the reused TTFTs close together (p90 - p10 under the gap). Queueing for a slot also
# makes later requests slower than the first wave, which got the slots: but by whatever the
# queue costs (0.5-1 s in `make demo` at c=16 and c=32), and spread out, never a fixed step.
STALL_RATIO = 3.0
STALL_GAP_MS = 20.0
STALL_MAX_GAP_MS = 250.0
MIN_FRESH = 1  # at c=1 with pre-opened connections, one fresh request per stage is all
MIN_REUSED = 3

BURST = "burst"
KEEPALIVE_STALL = "keepalive_stall"


def delivery_block(fig: StageFigures) -> dict[str, object] | None:
    """The stage's ``delivery`` entry of the result; None when nothing was folded (a
    result from before delivery was folded, or a worker that did not report it)."""
    if fig.ttft_fresh is None or fig.ttft_reused is None:
        return None
    fresh, reused = int(fig.ttft_fresh.total_count), int(fig.ttft_reused.total_count)
    fresh_p50 = percentile_ms(fig.ttft_fresh, 50.0) if fresh else None
    reused_p50 = percentile_ms(fig.ttft_reused, 50.0) if reused else None
    share = round(fig.burst_streams / fig.long_streams, 3) if fig.long_streams else None
    verdicts: list[dict[str, str]] = []
    if share is not None and fig.long_streams >= MIN_LONG and share >= BURST_SHARE:
        verdicts.append(
            {
                "kind": BURST,
                "text": f"tokens arrive in one burst ({share:.0%} of {fig.long_streams} "
                "streams): ITL is ~0 and TTFT ≈ E2E; the server (or a proxy) buffers "
                "the stream, so TTFT is the whole answer's time",
            }
        )
    if (
        fresh_p50 is not None
        and reused_p50 is not None
        and fresh >= MIN_FRESH
        and reused >= MIN_REUSED
        and reused_p50 > STALL_RATIO * fresh_p50
        and STALL_GAP_MS < reused_p50 - fresh_p50 <= STALL_MAX_GAP_MS
        and _spread_ms(fig) < reused_p50 - fresh_p50
    ):
        verdicts.append(
            {
                "kind": KEEPALIVE_STALL,
                "text": f"keep-alive stall: requests on a reused connection got their first "
                f"token in {reused_p50:.1f} ms (p50 of {reused}), a connection's first "
                f"request in {fresh_p50:.1f} ms (p50 of {fresh}); the server sends small "
                "writes with Nagle on and waits for this client's delayed ACK, so TTFT "
                'measures the socket, not the model: try connections = "fresh" '
                "(--connections fresh) or, on Linux, quickack = true (--quickack)",
            }
        )
    return {
        "burst_share": share,
        "ttft_fresh_p50_ms": fresh_p50,
        "ttft_reused_p50_ms": reused_p50,
        "fresh": fresh,
        "reused": reused,
        "verdicts": verdicts,
    }


def _spread_ms(fig: StageFigures) -> float:
    """p90 - p10 of the reused requests' TTFT: small for a fixed delayed-ACK step."""
    assert fig.ttft_reused is not None
    return percentile_ms(fig.ttft_reused, 90.0) - percentile_ms(fig.ttft_reused, 10.0)
