"""Readings over a stage's time, kept as columns of numbers on one time base.

A summary per stage (peak RSS, mean GPU use) hides what a person watching ``nvidia-smi``
sees: a KV cache filling, a model paged in mid-stage, a leak. So the monitor keeps every
reading, but as columns (``t_s`` plus one list per quantity) rather than an object per
sample: a ten-minute stage at 0.5 s is 1,200 numbers per column in the result file.

A quantity that could not be read at one tick is ``None`` there, never 0: a gap in the plot,
not a dip. A column that appears later (a GPU found on the second tick) is padded with
``None`` before its first reading, so every column is as long as ``t_s``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ColumnSummary:
    count: int  # readings that had a value
    min: float
    mean: float
    max: float
    p95: float  # nearest rank, over the readings (not time-weighted)

    def to_dict(self) -> dict[str, object]:
        return {
            "count": self.count,
            "min": self.min,
            "mean": self.mean,
            "max": self.max,
            "p95": self.p95,
        }


def summarize(values: Iterable[float | None]) -> ColumnSummary | None:
    """None when no reading had a value."""
    found = sorted(v for v in values if v is not None and math.isfinite(v))
    if not found:
        return None
    rank = max(math.ceil(0.95 * len(found)), 1)
    return ColumnSummary(
        count=len(found),
        min=round(found[0], 3),
        mean=round(sum(found) / len(found), 3),
        max=round(found[-1], 3),
        p95=round(found[rank - 1], 3),
    )


@dataclass(frozen=True)
class StageSeries:
    """Readings at ``t_s`` (seconds since the stage's sampling began, perf_counter)."""

    interval_s: float
    t_s: tuple[float, ...]
    columns: tuple[tuple[str, tuple[float | None, ...]], ...]  # (name, values), in order

    def column(self, name: str) -> tuple[float | None, ...]:
        for found, values in self.columns:
            if found == name:
                return values
        return (None,) * len(self.t_s)

    def summaries(self) -> dict[str, ColumnSummary]:
        out = {}
        for name, values in self.columns:
            summary = summarize(values)
            if summary is not None:
                out[name] = summary
        return out

    def to_dict(self) -> dict[str, list[float | None]]:
        """``{"t_s": [...], name: [...], ...}``: what the result file holds."""
        out: dict[str, list[float | None]] = {"t_s": list(self.t_s)}
        out.update((name, list(values)) for name, values in self.columns)
        return out


class SeriesRecorder:
    """Collects rows during a stage; :meth:`freeze` turns them into a :class:`StageSeries`."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.t_s: list[float] = []
        self._columns: dict[str, list[float | None]] = {}

    def add(self, t_s: float, row: Mapping[str, float | None]) -> None:
        n = len(self.t_s)
        for name in row:
            if name not in self._columns:
                self._columns[name] = [None] * n
        for name, values in self._columns.items():
            value = row.get(name)
            values.append(None if value is None else round(value, 3))
        self.t_s.append(round(t_s, 3))

    def last(self, name: str) -> float | None:
        values = self._columns.get(name)
        return values[-1] if values else None

    def freeze(self) -> StageSeries:
        return StageSeries(
            interval_s=self.interval_s,
            t_s=tuple(self.t_s),
            columns=tuple((name, tuple(values)) for name, values in self._columns.items()),
        )


def held_integral(t_s: Iterable[float], values: Iterable[float | None]) -> tuple[float, float]:
    """(integral, seconds covered) with each reading held over the time since the previous
    tick (the first over the time since 0): a stage with one reading at 0.35 s still
    integrates over 0.35 s. Ticks without a value cover nothing, so a meter that failed
    for a while lowers neither the mean nor the total by a fake zero."""
    total = 0.0
    covered = 0.0
    previous = 0.0
    for t, value in zip(t_s, values, strict=True):
        if value is not None:
            total += value * (t - previous)
            covered += t - previous
        previous = t
    return total, covered
