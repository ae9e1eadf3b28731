"""The ``[workload]`` section as frozen data: what each request asks for, not when.

Apart from ``model`` so that the section (its own dozen names) reads on its own; ``model``
imports ``WorkloadSpec`` for ``Scenario.workload``. The rules that tie one distribution's
numbers together live here, on the data, because two readers need them and neither can
import the other: ``read_workload`` (the scenario file) and ``loadbench.workload``, which
comes after ``scenario`` in the import order and samples from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "MAX_TOKENS",
    "DatasetFormat",
    "DatasetSpec",
    "Dist",
    "LengthDist",
    "SessionSpec",
    "SharedPrefixSpec",
    "TokenizerChoice",
    "TraceSpec",
    "WorkloadSpec",
]

# Far beyond any context window today, and small enough that a prompt of this size is
# still a string one process can build.
MAX_TOKENS = 10_000_000


class Dist(StrEnum):
    FIXED = "fixed"
    UNIFORM = "uniform"  # every integer from min to max equally likely
    NORMAL = "normal"  # rounded, then clamped into [min, max]


class DatasetFormat(StrEnum):
    SHAREGPT = "sharegpt"  # [{"conversations": [{"from": "human", "value": ...}, ...]}]
    JSONL = "jsonl"  # one {"prompt": ..., "output_tokens": ...} per line
    TEXT = "text"  # one prompt per non-blank line


class TokenizerChoice(StrEnum):
    AUTO = "auto"  # the server's /tokenize when it answers, else the approximation
    SERVER = "server"  # the server's /tokenize, or exit 2 before any request
    APPROX = "approx"  # words x 1.3, marked as approximate in the result


@dataclass(frozen=True)
class LengthDist:
    """A token length: one number, or a distribution drawn from with a seeded generator."""

    dist: Dist = Dist.FIXED
    value: int = 1  # fixed
    min: int = 1  # uniform and normal
    max: int = MAX_TOKENS
    mean: float = 0.0  # normal
    stddev: float = 0.0

    @classmethod
    def fixed(cls, value: int) -> LengthDist:
        return cls(Dist.FIXED, value=value)

    def problems(self, key: str) -> list[str]:
        """What makes these numbers impossible together, worded like every scenario check.

        Each number alone (a positive integer, a finite stddev) is the reader's to check;
        this is what only the set of them can say.
        """
        found: list[str] = []
        if self.dist is Dist.FIXED:
            return found
        if self.min > self.max:
            found.append(f"{key}: expected min <= max, got min {self.min} and max {self.max}")
            return found
        if self.dist is Dist.NORMAL:
            if self.stddev < 0:
                found.append(f"{key}.stddev: expected a number >= 0, got {self.stddev:g}")
            if not self.min <= self.mean <= self.max:
                found.append(
                    f"{key}.mean: expected a number from min {self.min} to max {self.max}, "
                    f"got {self.mean:g}"
                )
        return found

    def to_dict(self) -> dict[str, object]:
        if self.dist is Dist.FIXED:
            return {"dist": "fixed", "value": self.value}
        out: dict[str, object] = {"dist": str(self.dist), "min": self.min, "max": self.max}
        if self.dist is Dist.NORMAL:
            out |= {"mean": self.mean, "stddev": self.stddev}
        return out


@dataclass(frozen=True)
class DatasetSpec:
    file: str  # as written, relative to the scenario's folder
    format: DatasetFormat
    sample: int | None = None  # how many entries to keep after the seeded shuffle; all if None
    min_input_tokens: int | None = None  # filters, in the workload's tokenizer's tokens
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class TraceSpec:
    file: str  # as written, relative to the scenario's folder
    speedup: float = 1.0  # 2.0 replays the trace in half its recorded time
    block_tokens: int = 512  # tokens per hash_ids block (Mooncake's block size)


@dataclass(frozen=True)
class SessionSpec:
    turns: int
    think_time_s: float = 0.0  # between one turn's answer and the next turn's send


@dataclass(frozen=True)
class SharedPrefixSpec:
    groups: int
    prefix_tokens: int


@dataclass(frozen=True)
class WorkloadSpec:
    """``[workload]``: where prompts come from, how long they are and how answers are capped.

    At most one prompt source: ``input_tokens`` (synthetic text of that length),
    ``dataset`` or ``trace``. ``output_tokens`` overrides a dataset's or a trace's own
    lengths; without it each request asks for ``[request] max_tokens``.
    """

    input_tokens: LengthDist | None = None
    output_tokens: LengthDist | None = None
    dataset: DatasetSpec | None = None
    trace: TraceSpec | None = None
    sessions: SessionSpec | None = None
    shared_prefix: SharedPrefixSpec | None = None
    tokenizer: str = TokenizerChoice.AUTO  # a TokenizerChoice, or a tokenizer.json path
    ignore_eos: bool = False  # ask the server to write exactly max_tokens
    corpus: str | None = None  # a text file of the user's own; the shipped one if None
    seed: int = 0
    folder: str = "."  # the scenario's folder: files above are relative to it

    def to_dict(self) -> dict[str, object]:
        """As the result file shows it: plain JSON types, file names as written."""
        out: dict[str, object] = {"tokenizer": self.tokenizer, "seed": self.seed}
        if self.input_tokens is not None:
            out["input_tokens"] = self.input_tokens.to_dict()
        if self.output_tokens is not None:
            out["output_tokens"] = self.output_tokens.to_dict()
        if self.dataset is not None:
            d = self.dataset
            out["dataset"] = {"file": d.file, "format": str(d.format)} | {
                k: v
                for k, v in (
                    ("sample", d.sample),
                    ("min_input_tokens", d.min_input_tokens),
                    ("max_input_tokens", d.max_input_tokens),
                    ("max_output_tokens", d.max_output_tokens),
                )
                if v is not None
            }
        if self.trace is not None:
            t = self.trace
            out["trace"] = {"file": t.file, "speedup": t.speedup, "block_tokens": t.block_tokens}
        if self.sessions is not None:
            s = self.sessions
            out["sessions"] = {"turns": s.turns, "think_time_s": s.think_time_s}
        if self.shared_prefix is not None:
            p = self.shared_prefix
            out["shared_prefix"] = {"groups": p.groups, "prefix_tokens": p.prefix_tokens}
        if self.ignore_eos:
            out["ignore_eos"] = True
        if self.corpus is not None:
            out["corpus"] = self.corpus
        return out
