"""The result file: one versioned orjson document per run, written atomically.

Serialisation is explicit here and nowhere else, so the contract (``schema_version``
1, described by ``result.schema.json`` beside this module) is in one place.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import statistics
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from loadbench import __version__
from loadbench.errors import ResultFileError, UsageError
from loadbench.metrics import decode, encode
from loadbench.records import RequestRecord
from loadbench.results.delivery import delivery_block
from loadbench.run import StagePlan, StageResult
from loadbench.scenario import Scenario

SCHEMA_VERSION = 1


def environment() -> dict[str, object]:
    return {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count() or 1,
        "argv0": Path(sys.argv[0]).name,
    }


# As run.prompt_figures.MAX_PROMPT_FIGURES: the engine folds per-prompt figures up to this many.
_MAX_PROMPTS = 100
OUTLIER_RULE = (
    "a prompt is an outlier on a metric when its p50 is over 2x or under 0.5x the median "
    "of the per-prompt p50s (needs 3 or more prompts with figures)"
)


def _outliers(p50s: dict[str, float | None]) -> tuple[float | None, set[str]]:
    """The median of the per-prompt p50s, and the prompt ids that break ``OUTLIER_RULE``.

    With two prompts the median is their mean, so one of them would always look "far":
    no flags below three.
    """
    known = {k: v for k, v in p50s.items() if v is not None}
    if not known:
        return None, set()
    median = statistics.median(known.values())
    if len(known) < 3 or median <= 0:
        return round(median, 3), set()
    return round(median, 3), {k for k, v in known.items() if v > 2 * median or v < median / 2}


def prompts_to_dict(stage: StageResult, prompt_ids: Sequence[str]) -> dict[str, object] | None:
    """Per-prompt figures keyed by prompt id, with outliers flagged; a note instead past
    ``_MAX_PROMPTS`` prompts; None with one prompt or none folded (a ``[workload]``)."""
    if stage.prompts is None:
        if len(prompt_ids) > _MAX_PROMPTS:
            return {
                "note": f"{len(prompt_ids)} distinct prompts: per-prompt figures are kept "
                f"for up to {_MAX_PROMPTS}"
            }
        return None
    figs = {
        (prompt_ids[i] if i < len(prompt_ids) else f"p{i + 1}"): f for i, f in stage.prompts.items()
    }
    ttft_median, ttft_far = _outliers({k: f.ttft_p50_ms for k, f in figs.items()})
    e2e_median, e2e_far = _outliers({k: f.e2e_p50_ms for k, f in figs.items()})
    return {
        "outlier_rule": OUTLIER_RULE,
        "median_p50_ms": {"ttft": ttft_median, "e2e": e2e_median},
        "by_id": {
            k: {
                "count": f.count,
                "ttft_p50_ms": f.ttft_p50_ms,
                "e2e_p50_ms": f.e2e_p50_ms,
                "outlier": [m for m, far in (("ttft", ttft_far), ("e2e", e2e_far)) if k in far],
            }
            for k, f in figs.items()
        },
    }


def stage_to_dict(stage: StageResult, prompt_ids: Sequence[str] = ()) -> dict[str, object]:
    plan, fig = stage.plan, stage.figures
    prompts = prompts_to_dict(stage, prompt_ids)
    return {
        "model": plan.model,
        "label": plan.label,
        "mode": str(plan.mode),
        "concurrency": plan.concurrency,
        "rate": plan.rate,
        "max_concurrency": plan.max_concurrency,
        "started_at": stage.started_at,
        "finished_at": stage.finished_at,
        "interrupted": stage.interrupted,
        "stopped": stage.stopped,
        "requests": {"sent": fig.sent, "ok": fig.ok, "failed": fig.failed, "warmup": fig.warmup},
        "errors": {str(k): v for k, v in sorted(fig.errors.items())},
        "error_samples": {str(k): v for k, v in sorted(stage.error_samples.items())},
        "duration_s": round(fig.duration_s, 6),
        "throughput": {
            "requests_per_s": round(fig.requests_per_s, 4),
            "output_tokens_per_s": round(fig.output_tokens_per_s, 3),
        },
        "tokens": {"output": fig.output_tokens, "counted_by": fig.counted_by},
        "achieved_concurrency": round(fig.achieved_concurrency, 3),
        "pacing": {"busy_fraction": stage.busy_fraction},
        "goodput": None
        if fig.good is None
        else {"good": fig.good, "requests_per_s": round(fig.goodput_rps or 0.0, 4)},
        "latency_ms": {name: s.to_dict() for name, s in fig.latency_ms.items()},
        "histograms": {name: encode(h) for name, h in fig.histograms.items()},
        "histogram_clamped": fig.clamped,
        **(
            {}
            if fig.preopened is None
            else {"connections": {"preopened": fig.preopened, "opened": fig.opened}}
        ),
        **({} if prompts is None else {"prompts": prompts}),
        **({} if stage.lengths is None else {"lengths": stage.lengths.to_dict()}),
        **({} if (delivery := delivery_block(fig)) is None else {"delivery": delivery}),
        "client": stage.client.to_dict(),
        "server": stage.server.to_dict() if stage.server is not None else None,
        "server_metrics": stage.server_metrics,
    }


def build_document(
    scenario: Scenario,
    stages: Sequence[StageResult],
    *,
    started_at: str,
    finished_at: str,
    interrupted: bool,
    target: dict[str, object],
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "loadbench_version": __version__,
        "scenario": scenario.to_dict(),
        "target": target,
        "environment": environment(),
        "started_at": started_at,
        "finished_at": finished_at,
        "interrupted": interrupted,
        "warnings": list(warnings),
        "stages": [stage_to_dict(s, scenario.ids) for s in stages],
    }


class RecordWriter:
    """Per-request records streamed to a JSON Lines file as they finish, never held.

    Times are milliseconds from the run's start on the engine's clock. Lines go through
    the file's buffer, so the cost on the event loop is a few microseconds per request.
    """

    def __init__(self, path: Path, start_ns: int) -> None:
        try:
            self._file = path.open("wb")
        except OSError as exc:
            raise UsageError(f"{path}: cannot write records: {exc.strerror or exc}") from exc
        self._start_ns = start_ns

    def __call__(self, plan: StagePlan, rec: RequestRecord) -> None:
        t0 = self._start_ns
        first = rec.token_ns[0] if rec.token_ns else None
        line = {
            "model": plan.model,
            "stage": plan.label,
            "index": rec.index,
            "warmup": rec.warmup,
            "due_ms": round((rec.due_ns - t0) / 1e6, 3),
            "sent_ms": round((rec.sent_ns - t0) / 1e6, 3),
            "end_ms": round((rec.end_ns - t0) / 1e6, 3),
            "ttft_ms": None if first is None else round((first - rec.due_ns) / 1e6, 3),
            "e2e_ms": round((rec.end_ns - rec.due_ns) / 1e6, 3),
            "events": len(rec.token_ns),
            "output_tokens": rec.output_tokens,
            "counted_by": str(rec.counted_by),
            "prompt_tokens": rec.prompt_tokens,
            "status": rec.status,
            "error": rec.error,
            "detail": rec.detail,
        }
        self._file.write(orjson.dumps(line) + b"\n")

    def close(self) -> None:
        self._file.close()


def default_path(name: str, now: datetime, folder: Path = Path("results")) -> Path:
    return folder / f"{name}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"


def write_atomic(path: Path, data: bytes) -> None:
    """Write whole or not at all: a temp file in the same folder, fsync, then rename."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise UsageError(f"{folder}: cannot write results here: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"{path}: cannot write results: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dumps(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def schema() -> dict[str, Any]:
    text = resources.files("loadbench.results").joinpath("result.schema.json").read_bytes()
    loaded: dict[str, Any] = orjson.loads(text)
    return loaded


def load_result(path: str | Path) -> dict[str, Any]:
    """Read a result file, with a one-line error naming the file for anything unreadable."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except IsADirectoryError:
        raise ResultFileError(str(p), "is a directory, expected a result file") from None
    except OSError as exc:
        raise ResultFileError(str(p), f"cannot read: {exc.strerror or exc}") from None
    if not raw.strip():
        raise ResultFileError(str(p), "is empty, expected a loadbench result (JSON)")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ResultFileError(str(p), f"not JSON (truncated or not a result file): {exc}") from None
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise ResultFileError(str(p), "not a loadbench result: no schema_version")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise ResultFileError(
            str(p),
            f"schema_version {doc['schema_version']!r}, this loadbench reads {SCHEMA_VERSION}",
        )
    problem = _schema_problem(doc)
    if problem is not None:
        raise ResultFileError(str(p), problem)
    # The summary is derived data, recomputed by whoever needs it; only the thresholds it
    # was judged against (which may have come from the command line) are kept.
    summary = doc.pop("summary", None)
    slo = summary.get("slo") if isinstance(summary, dict) else None
    if isinstance(slo, list) and all(isinstance(t, str) for t in slo):
        doc["summary"] = {"slo": slo}
    return doc


def thresholds_of(doc: dict[str, Any]) -> list[str]:
    """The threshold expressions a loaded result was judged against."""
    summary = doc.get("summary")
    slo = summary.get("slo") if isinstance(summary, dict) else None
    if isinstance(slo, list):
        return [t for t in slo if isinstance(t, str)]
    scenario_slo = doc["scenario"].get("slo")
    return [t for t in scenario_slo if isinstance(t, str)] if isinstance(scenario_slo, list) else []


def _schema_problem(doc: dict[str, Any]) -> str | None:
    """The first way ``doc`` breaks the schema (or holds an unreadable histogram), or None.

    Checking at the file edge lets analysis, reports, compare and merge assume well-formed
    documents instead of guarding every field.
    """
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(doc))
    if error is not None:
        where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in error.absolute_path)
        return f"{where.lstrip('.') or 'document'}: {error.message[:200]}"
    for i, stage in enumerate(doc["stages"]):
        for name, blob in stage["histograms"].items():
            try:
                decode(blob)
            except ValueError as exc:
                return f"stages[{i}].histograms.{name}: {exc}"
    return None


@functools.cache
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(schema())
