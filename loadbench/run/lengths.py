"""What each request asked for beside what came back, and each session turn's latency.

Why a stage carries this: a server that stops early writes fewer tokens and looks fast,
and a tokenizer that miscounts sends other prompts than the scenario says. So every stage
with a ``[workload]`` keeps, over its ok measured requests, the requested and the measured
input and output lengths and the share of answers shorter than asked (the OSL mismatch,
AIPerf's name), and for sessions the TTFT of each turn (turn 1 against later turns shows
a prefix cache at work). Sums and histograms only: bounded state; result files merge
their means by weight (``results.merge``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

from loadbench.metrics import new_histogram, record, summarize
from loadbench.records import RequestRecord, TokenSource

__all__ = ["MAX_TURNS", "LengthFold", "Lengths", "Turn"]

MAX_TURNS = 32  # turns past this are folded into the last one kept


@dataclass
class Turn:
    """One turn number of every session in a stage: ok measured requests only."""

    count: int = 0
    cached_tokens: int = 0  # prompt tokens the server said it served from its cache
    cached_reported: int = 0  # requests whose server said how many (llama.cpp, vLLM usage)
    prompt_tokens: int = 0  # from usage
    ttft: HdrHistogram = field(default_factory=new_histogram)

    def to_dict(self, turn: int) -> dict[str, object]:
        ttft = summarize(self.ttft)
        return {
            "turn": turn,
            "ok": self.count,
            "ttft_ms": {"p50": ttft.p50, "p95": ttft.p95, "mean": ttft.mean},
            "prompt_tokens_mean": _mean(self.prompt_tokens, self.count),
            "cached_tokens_mean": _mean(self.cached_tokens, self.cached_reported),
        }


@dataclass
class Lengths:
    """Sums over a stage's ok measured requests; ``to_dict`` gives the means."""

    ok: int = 0
    input_requested: int = 0  # what the workload asked for (synthetic lengths, a trace)
    input_requested_n: int = 0
    input_counted: int = 0  # the sent prompt, by the workload's tokenizer (turn 1 only)
    input_counted_n: int = 0
    input_measured: int = 0  # usage.prompt_tokens: the whole request as the server saw it
    input_measured_n: int = 0
    output_requested: int = 0  # max_tokens
    output_measured: int = 0  # usage.completion_tokens, else content events
    output_short: int = 0  # answers with fewer tokens than max_tokens
    output_by_usage: int = 0  # of ``ok``, how many were counted by the server's usage
    turns: dict[int, Turn] = field(default_factory=dict)
    tokenizer: str = ""  # which tokenizer sized the prompts, and why that one
    approximate: bool = False  # the counts are estimates: the report says so beside them

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "ok": self.ok,
            "tokenizer": self.tokenizer,
            "approximate": self.approximate,
            "input_tokens": {
                "requested_mean": _mean(self.input_requested, self.input_requested_n),
                "counted_mean": _mean(self.input_counted, self.input_counted_n),
                "measured_mean": _mean(self.input_measured, self.input_measured_n),
            },
            "output_tokens": {
                "requested_mean": _mean(self.output_requested, self.ok),
                "measured_mean": _mean(self.output_measured, self.ok),
                "counted_by_usage": self.output_by_usage,
            },
            "osl_mismatch": round(self.output_short / self.ok, 4) if self.ok else None,
        }
        if self.turns:
            out["turns"] = [t.to_dict(n) for n, t in sorted(self.turns.items())]
        return out


class LengthFold:
    """Folds each finished request with what its item asked for; off the per-event path."""

    def __init__(self, sessions: bool, tokenizer: str = "", approximate: bool = False) -> None:
        self.lengths = Lengths(tokenizer=tokenizer, approximate=approximate)
        self._sessions = sessions

    def add(
        self,
        rec: RequestRecord,
        *,
        max_tokens: int,
        input_requested: int | None,
        input_counted: int | None,
        turn: int,
    ) -> None:
        if rec.error is not None or rec.warmup:
            return
        s = self.lengths
        s.ok += 1
        if input_requested is not None:
            s.input_requested += input_requested
            s.input_requested_n += 1
        if input_counted is not None and turn == 1:
            s.input_counted += input_counted
            s.input_counted_n += 1
        if rec.prompt_tokens is not None:
            s.input_measured += rec.prompt_tokens
            s.input_measured_n += 1
        s.output_requested += max_tokens
        s.output_measured += rec.output_tokens
        s.output_short += rec.output_tokens < max_tokens
        s.output_by_usage += rec.counted_by is TokenSource.USAGE
        if not self._sessions:
            return
        t = s.turns.setdefault(min(turn, MAX_TURNS), Turn())
        t.count += 1
        t.prompt_tokens += rec.prompt_tokens or 0
        if rec.cached_tokens is not None:
            t.cached_tokens += rec.cached_tokens
            t.cached_reported += 1
        if rec.token_ns:
            due = min(rec.due_ns, rec.sent_ns)  # as the stage's accumulator counts it
            record(t.ttft, (rec.token_ns[0] - due + 500) // 1000)


def _mean(total: int, n: int) -> float | None:
    return round(total / n, 2) if n else None
