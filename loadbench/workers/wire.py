"""The messages between the driver and its workers, and how they travel.

A message is one orjson object with a ``"type"``; on a pipe it is framed by a 4-byte
big-endian length, so nothing depends on line ends or the platform's text mode (Linux,
macOS and Windows alike). Over Ray the same bodies travel as bytes.

    driver -> worker: hello, ping, stage, stop, bye
    worker -> driver: ready (to hello), pong (to ping), progress (every heartbeat),
                      result (to stage, or to stop), refused (to hello, then it exits)

Plans and results cross as plain values here and nowhere else; histograms cross in
their encoded form (``metrics.encode``), which merges losslessly on the other side.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from hdrh.histogram import HdrHistogram

from loadbench.metrics import StageFigures, decode, encode, summarize
from loadbench.observe import ClientHealth
from loadbench.run import StagePlan, StageResult
from loadbench.scenario import LoadMode

__all__ = [
    "HEADER_BYTES",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL",
    "ShardResult",
    "frame",
    "plan_from_dict",
    "plan_to_dict",
    "unframe_length",
]

PROTOCOL = 1
MAX_MESSAGE_BYTES = 64 * 2**20  # a result is ~10-100 KB; anything near this is corruption
_HEADER = struct.Struct(">I")
HEADER_BYTES = _HEADER.size


def frame(message: Mapping[str, Any]) -> bytes:
    body = orjson.dumps(message)
    return _HEADER.pack(len(body)) + body


def unframe_length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {length} bytes announced: not a loadbench worker stream")
    return int(length)


def plan_to_dict(plan: StagePlan) -> dict[str, Any]:
    return {
        "model": plan.model,
        "mode": str(plan.mode),
        "concurrency": plan.concurrency,
        "rate": plan.rate,
        "max_concurrency": plan.max_concurrency,
        "warmup": plan.warmup,
        "requests": plan.requests,
        "duration_s": plan.duration_s,
        "offsets_ns": list(plan.offsets_ns),
        "prompt_order": list(plan.prompt_order),
    }


def plan_from_dict(d: Mapping[str, Any]) -> StagePlan:
    return StagePlan(
        model=str(d["model"]),
        mode=LoadMode(d["mode"]),
        concurrency=d["concurrency"],
        rate=d["rate"],
        max_concurrency=d["max_concurrency"],
        warmup=int(d["warmup"]),
        requests=d["requests"],
        duration_s=d["duration_s"],
        offsets_ns=tuple(d["offsets_ns"]),
        prompt_order=tuple(d["prompt_order"]),
    )


@dataclass(frozen=True)
class ShardResult:
    """One worker's part of one stage, as the driver merges it.

    ``first_due_wall_ns`` and ``last_end_wall_ns`` bound the worker's measured window on
    its own wall clock (None when it measured nothing); ``busy_ns`` is the time its
    measured requests were out, summed, as the accumulator counts it.
    """

    worker: int
    result: StageResult
    first_due_wall_ns: int | None
    last_end_wall_ns: int | None
    busy_ns: int
    start_skew_ms: float | None  # actual start - the shared start time, on its own clock
    stale_reuses: int
    # By prompt index: TTFT and E2E histograms of its ok measured requests, when the stage
    # has per-prompt figures (see run.prompt_figures); merged by prompt on the driver.
    prompts: dict[int, tuple[HdrHistogram, HdrHistogram]] | None = None

    def to_dict(self) -> dict[str, Any]:
        r, fig = self.result, self.result.figures
        return {
            "worker": self.worker,
            "plan": plan_to_dict(r.plan),
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "interrupted": r.interrupted,
            "stopped": r.stopped,
            "busy_fraction": r.busy_fraction,
            "error_samples": r.error_samples,
            "client": r.client.to_dict(),
            "figures": {
                "sent": fig.sent,
                "ok": fig.ok,
                "failed": fig.failed,
                "errors": fig.errors,
                "warmup": fig.warmup,
                "duration_s": fig.duration_s,
                "output_tokens": fig.output_tokens,
                "counted_by": fig.counted_by,
                "clamped": fig.clamped,
                "good": fig.good,
                "histograms": {name: encode(h) for name, h in fig.histograms.items()},
                "preopened": fig.preopened,
                "opened": fig.opened,
                "delivery": None
                if fig.ttft_fresh is None or fig.ttft_reused is None
                else {
                    "fresh": encode(fig.ttft_fresh),
                    "reused": encode(fig.ttft_reused),
                    "long_streams": fig.long_streams,
                    "burst_streams": fig.burst_streams,
                },
            },
            "prompts": None
            if self.prompts is None
            else {str(k): [encode(t), encode(e)] for k, (t, e) in self.prompts.items()},
            "first_due_wall_ns": self.first_due_wall_ns,
            "last_end_wall_ns": self.last_end_wall_ns,
            "busy_ns": self.busy_ns,
            "start_skew_ms": self.start_skew_ms,
            "stale_reuses": self.stale_reuses,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShardResult:
        """ValueError (or KeyError, TypeError) on a malformed result: the driver marks the
        worker lost rather than merge something it cannot read."""
        f = d["figures"]
        histograms = {name: decode(blob) for name, blob in f["histograms"].items()}
        duration_s = float(f["duration_s"])
        delivery = f.get("delivery")
        prompts = d.get("prompts")
        figures = StageFigures(
            sent=int(f["sent"]),
            ok=int(f["ok"]),
            failed=int(f["failed"]),
            errors={str(k): int(v) for k, v in f["errors"].items()},
            warmup=int(f["warmup"]),
            duration_s=duration_s,
            requests_per_s=int(f["ok"]) / duration_s if duration_s > 0 else 0.0,
            output_tokens_per_s=int(f["output_tokens"]) / duration_s if duration_s > 0 else 0.0,
            output_tokens=int(f["output_tokens"]),
            counted_by=str(f["counted_by"]),
            latency_ms={name: summarize(h) for name, h in histograms.items()},
            histograms=histograms,
            clamped=int(f["clamped"]),
            achieved_concurrency=int(d["busy_ns"]) / 1e9 / duration_s if duration_s > 0 else 0.0,
            good=None if f["good"] is None else int(f["good"]),
            goodput_rps=None
            if f["good"] is None
            else (int(f["good"]) / duration_s if duration_s > 0 else 0.0),
            preopened=_count(f.get("preopened")),
            opened=_count(f.get("opened")),
            ttft_fresh=None if delivery is None else decode(delivery["fresh"]),
            ttft_reused=None if delivery is None else decode(delivery["reused"]),
            long_streams=0 if delivery is None else int(delivery["long_streams"]),
            burst_streams=0 if delivery is None else int(delivery["burst_streams"]),
        )
        result = StageResult(
            plan=plan_from_dict(d["plan"]),
            figures=figures,
            client=ClientHealth(**d["client"]),
            started_at=str(d["started_at"]),
            finished_at=str(d["finished_at"]),
            interrupted=bool(d["interrupted"]),
            error_samples={str(k): str(v) for k, v in d["error_samples"].items()},
            busy_fraction=d["busy_fraction"],
            stopped=d["stopped"],
        )
        return cls(
            worker=int(d["worker"]),
            result=result,
            first_due_wall_ns=d["first_due_wall_ns"],
            last_end_wall_ns=d["last_end_wall_ns"],
            busy_ns=int(d["busy_ns"]),
            start_skew_ms=d["start_skew_ms"],
            stale_reuses=int(d["stale_reuses"]),
            prompts=None
            if prompts is None
            else {int(k): (decode(t), decode(e)) for k, (t, e) in prompts.items()},
        )


def _count(value: Any) -> int | None:
    return None if value is None else int(value)
