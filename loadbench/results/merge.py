"""Merge result files of one scenario run at the same time by several load generators.

One process (or machine) may not be able to offer enough load; several run the same
scenario side by side and their files are merged afterwards. Pure: documents in, one
document out, valid against ``result.schema.json``.

Latencies merge exactly: every histogram has the same configuration, so adding counts
gives the histogram one generator would have recorded for all requests. Throughputs add
up, because the generators ran in parallel. Each stage keeps its per-generator key
(``concurrency = 4`` stays 4) and gains ``"generators": n``; the summary's ``load`` is the
total. Nothing checks that the runs really overlapped in time beyond a warning: their
clocks may not agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hdrh.histogram import HdrHistogram

from loadbench.errors import ResultFileError, UsageError
from loadbench.metrics import decode, encode, merge, summarize
from loadbench.results.analysis import summarize_run
from loadbench.results.compare import StageKey, stage_key, stage_label
from loadbench.thresholds import parse_threshold

__all__ = ["merge_results"]

_Part = tuple[str, Mapping[str, Any]]  # (path, stage)


def _stages(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [s for s in doc.get("stages", ()) if isinstance(s, Mapping)]


def _scenario_name(doc: Mapping[str, Any]) -> object:
    scenario = doc.get("scenario")
    return scenario.get("name") if isinstance(scenario, Mapping) else None


def _check(docs: Sequence[Mapping[str, Any]], paths: Sequence[str]) -> None:
    """Every reason the files are not runs of one scenario, in one error."""
    problems: list[str] = []
    first, name = paths[0], _scenario_name(docs[0])
    keys = {stage_key(s): stage_label(s) for s in _stages(docs[0])}
    seen: set[str] = set()
    for i, (doc, path) in enumerate(zip(docs, paths, strict=True)):
        if path in seen:
            problems.append(f"{path}: given twice")
        seen.add(path)
        labels = [stage_key(s) for s in _stages(doc)]
        if len(set(labels)) < len(labels):
            problems.append(f"{path}: a stage appears twice, so stages cannot be matched")
        if i == 0:
            continue
        other = _scenario_name(doc)
        if other != name:
            problems.append(f"{path}: scenario {other!r}, but {first} has {name!r}")
        these = {stage_key(s): stage_label(s) for s in _stages(doc)}
        missing = [label for k, label in keys.items() if k not in these]
        extra = [label for k, label in these.items() if k not in keys]
        if missing:
            problems.append(f"{path}: lacks stages {', '.join(missing)} that {first} has")
        if extra:
            problems.append(f"{path}: has stages {', '.join(extra)} that {first} lacks")
    if problems:
        raise UsageError(
            "cannot merge: the files must be runs of one scenario with the same stages\n"
            + "\n".join(problems)
        )


def _int(obj: object) -> int:
    return obj if isinstance(obj, int) and not isinstance(obj, bool) else 0


def _float(obj: object) -> float | None:
    return float(obj) if isinstance(obj, int | float) and not isinstance(obj, bool) else None


def _sum_table(parts: Sequence[_Part], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, stage in parts:
        table = stage.get(key)
        for name, n in table.items() if isinstance(table, Mapping) else ():
            out[name] = out.get(name, 0) + _int(n)
    return out


def _histograms(parts: Sequence[_Part]) -> dict[str, HdrHistogram]:
    names: dict[str, None] = {}
    for _, stage in parts:
        names.update(dict.fromkeys(stage.get("histograms", {})))
    merged: dict[str, HdrHistogram] = {}
    for name in names:
        hs = []
        for path, stage in parts:
            blob = stage.get("histograms", {}).get(name)
            if blob is None:
                continue
            try:
                hs.append(decode(blob))
            except (ValueError, TypeError) as exc:
                where = f"stage {stage_label(stage)}: histograms.{name}"
                raise ResultFileError(path, f"{where}: {exc}") from None
        merged[name] = merge(hs)
    return merged


def _client(parts: Sequence[_Part]) -> dict[str, Any]:
    """The busiest generator's client figures; a bottleneck anywhere is one for all."""
    clients: list[Mapping[str, Any]] = [
        c for _, s in parts if isinstance(c := s.get("client"), Mapping)
    ]

    def cpu(c: Mapping[str, Any]) -> float:
        return _float(c.get("cpu_percent")) or 0.0

    busiest: Mapping[str, Any] = {}
    for c in clients:
        if not busiest or cpu(c) > cpu(busiest):
            busiest = c
    worst: dict[str, Any] = {"cpu_percent": 0.0, "loop_lag_ms_p99": 0.0, **busiest}
    worst["bottleneck"] = any(c.get("bottleneck") is True for c in clients)
    for key in ("loop_lag_ms_p50", "loop_lag_ms_p99", "loop_lag_ms_max"):
        values = [v for c in clients if (v := _float(c.get(key))) is not None]
        if values:
            worst[key] = max(values)
    if worst.get("warning") is None:
        worst["warning"] = next((c["warning"] for c in clients if c.get("warning")), None)
    return worst


def _busy_fraction(parts: Sequence[_Part]) -> float | None:
    """Weighted by each part's concurrency (its number of workers); None if any lacks it."""
    total = weight = 0.0
    for _, stage in parts:
        fraction = _float((stage.get("pacing") or {}).get("busy_fraction"))
        if fraction is None:
            return None
        workers = _float(stage.get("concurrency")) or 1.0
        total += fraction * workers
        weight += workers
    return round(total / weight, 4) if weight else None


def _goodput(parts: Sequence[_Part]) -> dict[str, Any] | None:
    """Summed when every part measured goodput; None when any did not (no common SLO)."""
    goodputs = [g for _, s in parts if isinstance(g := s.get("goodput"), Mapping)]
    if len(goodputs) < len(parts):
        return None
    out = dict(goodputs[0])
    out["good"] = sum(_int(g.get("good")) for g in goodputs)
    rps = sum(_float(g.get("requests_per_s")) or 0.0 for g in goodputs)
    out["requests_per_s"] = round(rps, 4)
    return out


def _merge_stage(parts: Sequence[_Part]) -> dict[str, Any]:
    stages = [s for _, s in parts]
    out = dict(stages[0])  # keys this module does not know are kept from the first part
    histograms = _histograms(parts)
    counted_by = {s.get("tokens", {}).get("counted_by") for s in stages}
    throughput = [s.get("throughput", {}) for s in stages]
    out.update(
        {
            "interrupted": any(s.get("interrupted") is True for s in stages),
            "requests": _sum_table(parts, "requests"),
            "errors": dict(sorted(_sum_table(parts, "errors").items())),
            "duration_s": max(_float(s.get("duration_s")) or 0.0 for s in stages),
            "throughput": {
                "requests_per_s": round(
                    sum(_float(t.get("requests_per_s")) or 0.0 for t in throughput), 4
                ),
                "output_tokens_per_s": round(
                    sum(_float(t.get("output_tokens_per_s")) or 0.0 for t in throughput), 3
                ),
            },
            "tokens": {
                "output": sum(_int(s.get("tokens", {}).get("output")) for s in stages),
                "counted_by": counted_by.pop() if len(counted_by) == 1 else "mixed",
            },
            "latency_ms": {name: summarize(h).to_dict() for name, h in histograms.items()},
            "histograms": {name: encode(h) for name, h in histograms.items()},
            "histogram_clamped": sum(_int(s.get("histogram_clamped")) for s in stages),
            "client": _client(parts),
            "server": next((s["server"] for s in stages if s.get("server") is not None), None),
            "generators": sum(_int(s.get("generators")) or 1 for s in stages),
        }
    )
    samples: dict[str, str] = {}
    for s in reversed(stages):  # the first part's sample wins
        samples.update(s.get("error_samples", {}))
    out["error_samples"] = dict(sorted(samples.items()))
    for key, pick in (("started_at", min), ("finished_at", max)):
        stamps = [s[key] for s in stages if isinstance(s.get(key), str)]
        if stamps:
            out[key] = pick(stamps)  # ISO 8601 in UTC sorts as text
    achieved = [_float(s.get("achieved_concurrency")) for s in stages]
    if all(a is not None for a in achieved):
        out["achieved_concurrency"] = round(sum(a or 0.0 for a in achieved), 4)
    else:
        out.pop("achieved_concurrency", None)
    if all(isinstance(s.get("pacing"), Mapping) for s in stages):
        out["pacing"] = {**stages[0]["pacing"], "busy_fraction": _busy_fraction(parts)}
    if any("goodput" in s for s in stages):
        out["goodput"] = _goodput(parts)
    if all(isinstance(s.get("connections"), Mapping) for s in stages):
        out["connections"] = {
            k: sum(_int(s["connections"].get(k)) for s in stages) for k in ("preopened", "opened")
        }
    if all(isinstance(s.get("lengths"), Mapping) for s in stages):
        out["lengths"] = merge_lengths([s["lengths"] for s in stages])
    return out


def _table(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, Mapping) else {}


def merge_lengths(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means weighted by each part's ok requests; per-turn TTFT percentiles do not merge
    from percentiles, so a merged turn keeps its mean and drops p50 and p95."""
    ok = [_int(p.get("ok")) for p in parts]
    total = sum(ok)

    def mean(values: Sequence[object], weights: Sequence[int], digits: int = 2) -> float | None:
        floats = [_float(v) for v in values]
        pairs = [(x, w) for x, w in zip(floats, weights, strict=True) if x is not None]
        n = sum(w for _, w in pairs)
        return round(sum(v * w for v, w in pairs) / n, digits) if n else None

    def side(key: str, names: Sequence[str]) -> dict[str, Any]:
        tables = [_table(p, key) for p in parts]
        out: dict[str, Any] = {n: mean([t.get(n) for t in tables], ok) for n in names}
        if key == "output_tokens":
            out["counted_by_usage"] = sum(_int(t.get("counted_by_usage")) for t in tables)
        return out

    merged: dict[str, Any] = {
        "ok": total,
        "tokenizer": parts[0].get("tokenizer", ""),
        "approximate": any(p.get("approximate") is True for p in parts),
        "input_tokens": side("input_tokens", ("requested_mean", "counted_mean", "measured_mean")),
        "output_tokens": side("output_tokens", ("requested_mean", "measured_mean")),
        "osl_mismatch": mean([p.get("osl_mismatch") for p in parts], ok, 4),
    }
    by_turn: dict[int, list[Mapping[str, Any]]] = {}
    for p in parts:
        for t in p.get("turns") or ():
            by_turn.setdefault(_int(t.get("turn")), []).append(t)
    if by_turn:
        turns = []
        for n, ts in sorted(by_turn.items()):
            w = [_int(t.get("ok")) for t in ts]
            ttft = [_table(t, "ttft_ms") for t in ts]
            turns.append(
                {
                    "turn": n,
                    "ok": sum(w),
                    "ttft_ms": {
                        "p50": ttft[0].get("p50") if len(ts) == 1 else None,
                        "p95": ttft[0].get("p95") if len(ts) == 1 else None,
                        "mean": mean([x.get("mean") for x in ttft], w),
                    },
                    "prompt_tokens_mean": mean([t.get("prompt_tokens_mean") for t in ts], w),
                    "cached_tokens_mean": mean([t.get("cached_tokens_mean") for t in ts], w),
                }
            )
        merged["turns"] = turns
    return merged


def _overlap_warnings(docs: Sequence[Mapping[str, Any]], paths: Sequence[str]) -> list[str]:
    """Generators that did not run at the same time make summed throughputs wrong."""
    spans = [(d.get("started_at"), d.get("finished_at")) for d in docs]
    start, end = spans[0]
    if not (isinstance(start, str) and isinstance(end, str)):
        return []
    warnings = []
    for path, (s, e) in zip(paths[1:], spans[1:], strict=True):
        if isinstance(s, str) and isinstance(e, str) and (s > end or e < start):
            warnings.append(
                f"{path} ran {s}..{e}, not at the same time as {paths[0]} ({start}..{end}): "
                f"merged throughputs assume parallel load generators"
            )
    return warnings


def merge_results(docs: Sequence[Mapping[str, Any]], paths: Sequence[str]) -> dict[str, Any]:
    """One result document from ``docs`` (read from ``paths``, in the same order).

    :class:`UsageError` naming the files when they differ in scenario name or stage set.
    Top-level fields not merged here (environment, target, scenario) are the first file's;
    warnings are every file's, prefixed with its path. The summary is recomputed, with the
    thresholds of the first file's ``summary.slo`` when it has them.
    """
    if not docs or len(docs) != len(paths):
        raise ValueError(f"need as many paths as documents, at least one: {len(paths)}")
    _check(docs, paths)
    by_key: dict[StageKey, list[_Part]] = {}
    for doc, path in zip(docs, paths, strict=True):
        for stage in _stages(doc):
            by_key.setdefault(stage_key(stage), []).append((path, stage))
    first = docs[0]
    out = dict(first)
    stamps = {
        key: [d[key] for d in docs if isinstance(d.get(key), str)]
        for key in ("started_at", "finished_at")
    }
    if stamps["started_at"]:
        out["started_at"] = min(stamps["started_at"])
    if stamps["finished_at"]:
        out["finished_at"] = max(stamps["finished_at"])
    out["interrupted"] = any(d.get("interrupted") is True for d in docs)
    out["warnings"] = [
        f"{path}: {w}"
        for doc, path in zip(docs, paths, strict=True)
        for w in doc.get("warnings", ())
    ] + _overlap_warnings(docs, paths)
    out["merged_from"] = list(paths)
    out["stages"] = [_merge_stage(by_key[stage_key(s)]) for s in _stages(first)]
    summary = first.get("summary")
    slo = summary.get("slo", ()) if isinstance(summary, Mapping) else ()
    out["summary"] = summarize_run(out, [parse_threshold(text) for text in slo])
    return out
