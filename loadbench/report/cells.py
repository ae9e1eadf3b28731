"""Reading a result document and formatting its numbers for the report's table cells.

Shared by the report's own sections (:mod:`loadbench.report.document`), the server-side
sections (:mod:`loadbench.report.serverside_sections`) and the plots, so that a latency reads
the same wherever it appears: ms with 1 decimal, 2 below 10 ms; rates with 2; ``—`` where
there is no value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Run = tuple[str, Mapping[str, Any]]

NONE = "—"


def ms(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def rate(value: float | None) -> str:
    return NONE if value is None else f"{value:.2f}"


def models_of(doc: Mapping[str, Any]) -> list[str]:
    """The document's models in the order of their first stage."""
    return list(dict.fromkeys(str(s["model"]) for s in doc["stages"]))


def model_summary(doc: Mapping[str, Any], model: str) -> Mapping[str, Any] | None:
    """The model's entry in ``doc["summary"]["models"]``; None when the summary lacks it."""
    for m in (doc.get("summary") or {}).get("models", []):
        if m.get("model") == model:
            found: Mapping[str, Any] = m
            return found
    return None


def points_by_label(doc: Mapping[str, Any], model: str) -> dict[str, Mapping[str, Any]]:
    summary = model_summary(doc, model)
    return {str(p["label"]): p for p in (summary or {}).get("points", [])}


def stage_load(stage: Mapping[str, Any]) -> float:
    """The concurrency or the arrival rate (req/s), whichever the stage's mode varies."""
    value = stage["rate"] if stage["mode"] == "rate" else stage["concurrency"]
    return float(value)


def latency(stage: Mapping[str, Any], metric: str, stat: str) -> float | None:
    """A latency in ms, or None when the stage has no value for it (no ok request)."""
    found = stage.get("latency_ms", {}).get(metric)
    if not found or not found.get("count"):
        return None
    return float(found[stat])


def stage_label(stage: Mapping[str, Any]) -> str:
    return f"{stage['label']} (interrupted)" if stage.get("interrupted") else str(stage["label"])
