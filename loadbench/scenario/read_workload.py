"""The ``[workload]`` section read and checked into a ``WorkloadSpec``.

Pure: the section's shape and numbers only. The files it names (dataset, trace, corpus,
tokenizer.json) are opened by ``loadbench.workload.prepare_workload`` before the first
request, which words their problems the same way; here a file is only checked to exist, so
``loadbench check`` catches a typo in a name without reading a large file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from loadbench.scenario.checks import Checker, is_int
from loadbench.scenario.workload_model import (
    MAX_TOKENS,
    DatasetFormat,
    DatasetSpec,
    Dist,
    LengthDist,
    SessionSpec,
    SharedPrefixSpec,
    TokenizerChoice,
    TraceSpec,
    WorkloadSpec,
)

__all__ = ["read_workload"]

_KEYS = (
    "input_tokens",
    "output_tokens",
    "dataset",
    "trace",
    "sessions",
    "shared_prefix",
    "tokenizer",
    "ignore_eos",
    "corpus",
    "seed",
)
_DIST_KEYS = {
    Dist.FIXED: ("dist", "value"),
    Dist.UNIFORM: ("dist", "min", "max"),
    Dist.NORMAL: ("dist", "mean", "stddev", "min", "max"),
}
_DATASET_KEYS = (
    "file",
    "format",
    "sample",
    "min_input_tokens",
    "max_input_tokens",
    "max_output_tokens",
)
_TRACE_KEYS = ("file", "speedup", "block_tokens")
_MAX_TURNS = 1_000
_MAX_GROUPS = 1_000_000


def read_workload(c: Checker, doc: Mapping[str, object], folder: Path) -> WorkloadSpec | None:
    """``[workload]`` checked; None when absent or when a problem was added to ``c``."""
    if "workload" not in doc:
        return None
    raw = c.table(doc, "workload", "workload", _KEYS)
    if raw is None:
        return None
    before = len(c.problems)
    lengths = {
        key: _length(c, f"workload.{key}", raw[key])
        for key in ("input_tokens", "output_tokens")
        if key in raw
    }
    inputs, outputs = lengths.get("input_tokens"), lengths.get("output_tokens")
    dataset = _dataset(c, raw["dataset"], folder) if "dataset" in raw else None
    trace = _trace(c, raw["trace"], folder) if "trace" in raw else None
    sessions = _sessions(c, raw["sessions"]) if "sessions" in raw else None
    prefix = _shared_prefix(c, raw["shared_prefix"]) if "shared_prefix" in raw else None
    tokenizer = _tokenizer(c, raw.get("tokenizer", str(TokenizerChoice.AUTO)), folder)
    ignore_eos = raw.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        c.expected("workload.ignore_eos", "true or false", ignore_eos)
    corpus = _file(c, "workload.corpus", raw["corpus"], folder) if "corpus" in raw else None
    seed = c.integer("workload.seed", raw.get("seed", 0), -(2**63), 2**63 - 1)
    sources = [k for k in ("input_tokens", "dataset", "trace") if k in raw]
    if len(sources) > 1:
        got = " and ".join(sources)
        c.add(f"workload: expected one of input_tokens, dataset or trace, got {got}")
    elif not sources:
        c.add("workload: expected one of input_tokens, dataset or trace: where prompts come from")
    if "trace" in raw:
        for key in ("sessions", "shared_prefix"):
            if key in raw:
                c.add(f"workload.{key}: expected no {key} with a trace: the trace has its own")
    if len(c.problems) > before or tokenizer is None or seed is None:
        return None
    assert isinstance(ignore_eos, bool)  # checked above, else a problem was added
    return WorkloadSpec(
        inputs,
        outputs,
        dataset,
        trace,
        sessions,
        prefix,
        tokenizer,
        ignore_eos,
        corpus,
        seed,
        str(folder),
    )


def _tokens(c: Checker, key: str, value: object) -> int | None:
    return c.integer(key, value, 1, MAX_TOKENS)


def _length(c: Checker, key: str, value: object) -> LengthDist | None:
    """A positive integer, or ``{dist = "uniform", min = .., max = ..}`` and the like."""
    if is_int(value):
        n = _tokens(c, key, value)
        return None if n is None else LengthDist.fixed(n)
    if not isinstance(value, dict):
        c.expected(key, "a positive integer or a table with dist = fixed, uniform or normal", value)
        return None
    kind = c.choice(f"{key}.dist", value.get("dist"), Dist)
    if kind is None:
        return None
    dist = Dist(kind)
    c.unknown_keys(key, value, _DIST_KEYS[dist])
    before = len(c.problems)
    if dist is Dist.FIXED:
        n = _tokens(c, f"{key}.value", value.get("value"))
        return None if n is None or len(c.problems) > before else LengthDist.fixed(n)
    if dist is Dist.UNIFORM:
        for name in ("min", "max"):
            if name not in value:
                c.add(f"{key}.{name}: expected a positive integer, got nothing")
    low = _tokens(c, f"{key}.min", value.get("min", 1))
    high = _tokens(c, f"{key}.max", value.get("max", MAX_TOKENS))
    mean = stddev = 0.0
    if dist is Dist.NORMAL:
        for name in ("mean", "stddev"):
            if name not in value:
                c.add(f"{key}.{name}: expected a number, got nothing")
        mean = c.number(f"{key}.mean", value.get("mean", 1), positive=True) or 0.0
        # The sign is the distribution's rule (``LengthDist.problems``); here only finite.
        stddev = c.number(f"{key}.stddev", value.get("stddev", 0), want="a number >= 0") or 0.0
    if len(c.problems) > before or low is None or high is None:
        return None
    spec = LengthDist(dist, min=low, max=high, mean=mean, stddev=stddev)
    found = spec.problems(key)
    c.problems.extend(found)
    return None if found else spec


def _file(c: Checker, key: str, value: object, folder: Path) -> str | None:
    """A file name as written; refused now if nothing is there, read later."""
    name = c.string(key, value)
    if name is None:
        return None
    if not (folder / name).is_file():
        c.add(f"{key}: expected a file, got {name!r} (no such file next to the scenario)")
        return None
    return name


def _dataset(c: Checker, value: object, folder: Path) -> DatasetSpec | None:
    if not isinstance(value, dict):
        c.expected("workload.dataset", "a table with file and format", value)
        return None
    c.unknown_keys("workload.dataset", value, _DATASET_KEYS)
    before = len(c.problems)
    if "file" not in value:
        c.add("workload.dataset.file: expected a file name, got nothing")
    file = _file(c, "workload.dataset.file", value.get("file"), folder) if "file" in value else None
    fmt = c.choice("workload.dataset.format", value.get("format", "jsonl"), DatasetFormat)
    limits: dict[str, int | None] = {}
    for name in _DATASET_KEYS[2:]:
        if name in value:
            limits[name] = _tokens(c, f"workload.dataset.{name}", value[name])
    low, high = limits.get("min_input_tokens"), limits.get("max_input_tokens")
    if low is not None and high is not None and low > high:
        c.add(
            f"workload.dataset: expected min_input_tokens <= max_input_tokens, got {low} and {high}"
        )
    if len(c.problems) > before or file is None or fmt is None:
        return None
    return DatasetSpec(
        file,
        DatasetFormat(fmt),
        limits.get("sample"),
        low,
        high,
        limits.get("max_output_tokens"),
    )


def _trace(c: Checker, value: object, folder: Path) -> TraceSpec | None:
    if not isinstance(value, dict):
        c.expected("workload.trace", "a table with file and speedup", value)
        return None
    c.unknown_keys("workload.trace", value, _TRACE_KEYS)
    before = len(c.problems)
    if "file" not in value:
        c.add("workload.trace.file: expected a file name, got nothing")
    file = _file(c, "workload.trace.file", value.get("file"), folder) if "file" in value else None
    speedup = c.number("workload.trace.speedup", value.get("speedup", 1.0), positive=True, high=1e6)
    block = _tokens(c, "workload.trace.block_tokens", value.get("block_tokens", 512))
    if len(c.problems) > before or file is None or speedup is None or block is None:
        return None
    return TraceSpec(file, speedup, block)


def _sessions(c: Checker, value: object) -> SessionSpec | None:
    raw = c.table({"s": value}, "s", "workload.sessions", ("turns", "think_time_s"))
    if raw is None:
        return None
    if "turns" not in raw:
        c.add("workload.sessions.turns: expected a positive integer, got nothing")
        return None
    turns = c.integer("workload.sessions.turns", raw["turns"], 1, _MAX_TURNS)
    think = raw.get("think_time_s", 0.0)
    think = c.number("workload.sessions.think_time_s", think, low=0.0, high=3600.0)
    return None if turns is None or think is None else SessionSpec(turns, think)


def _shared_prefix(c: Checker, value: object) -> SharedPrefixSpec | None:
    raw = c.table({"p": value}, "p", "workload.shared_prefix", ("groups", "prefix_tokens"))
    if raw is None:
        return None
    missing = [k for k in ("groups", "prefix_tokens") if k not in raw]
    for name in missing:
        c.add(f"workload.shared_prefix.{name}: expected a positive integer, got nothing")
    if missing:
        return None
    groups = c.integer("workload.shared_prefix.groups", raw["groups"], 1, _MAX_GROUPS)
    tokens = _tokens(c, "workload.shared_prefix.prefix_tokens", raw["prefix_tokens"])
    return None if groups is None or tokens is None else SharedPrefixSpec(groups, tokens)


def _tokenizer(c: Checker, value: object, folder: Path) -> str | None:
    """``auto``, ``server``, ``approx``, or the path of a ``tokenizer.json``."""
    want = "'auto', 'server', 'approx' or the path of a tokenizer.json"
    if not isinstance(value, str) or not value.strip():
        c.expected("workload.tokenizer", want, value)
        return None
    if value in tuple(TokenizerChoice):
        return value
    if not (folder / value).is_file():
        c.add(f"workload.tokenizer: expected {want}, got {value!r} (no such file)")
        return None
    return value
