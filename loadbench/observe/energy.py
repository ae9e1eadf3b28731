"""Energy per stage: the CPU packages' RAPL counters and what a stage cost per token.

Linux exposes Intel's and AMD's Running Average Power Limit counters under
``/sys/class/powercap/intel-rapl:N/energy_uj`` (top-level zones are packages, or ``psys``
for the whole platform on some laptops; ``intel-rapl:N:M`` subzones are parts of them and
are left out so nothing counts twice). Each counter wraps at ``max_energy_range_uj``, every
few minutes to an hour depending on power, so the meter reads it every tick and adds the
deltas. Since Linux 5.10 ``energy_uj`` is readable by root only (CVE-2020-8694): a meter
that cannot be read is reported absent with that reason, never as 0 J.

GPU energy comes from the GPU readers (:mod:`loadbench.observe.gpus`); both end up as
:class:`EnergyUse` values on the stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

POWERCAP_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class EnergyUse:
    """One meter over one stage (its model's stage)."""

    meter: str  # "gpu0 NVIDIA H200", "rapl package-0"
    method: str  # "NVML energy counter", "integrated power (nvidia-smi)", "RAPL counter"
    joules: float
    seconds: float  # the time the joules cover
    joules_per_output_token: float | None  # None when the stage produced no token

    @property
    def watts_mean(self) -> float | None:
        return self.joules / self.seconds if self.seconds > 0 else None

    def to_dict(self) -> dict[str, object]:
        watts = self.watts_mean
        return {
            "meter": self.meter,
            "method": self.method,
            "joules": round(self.joules, 3),
            "seconds": round(self.seconds, 3),
            "watts_mean": None if watts is None else round(watts, 3),
            "joules_per_output_token": None
            if self.joules_per_output_token is None
            else round(self.joules_per_output_token, 6),
        }


def energy_use(
    meter: str, method: str, joules: float, seconds: float, output_tokens: int | None
) -> EnergyUse:
    per_token = joules / output_tokens if output_tokens else None
    return EnergyUse(meter, method, joules, seconds, per_token)


def counter_delta(before: int, after: int, max_range: int) -> int:
    """The increase of a counter that wraps to 0 after ``max_range``; at most one wrap
    between two readings is assumed, which ticking every interval guarantees."""
    if after >= before:
        return after - before
    return max_range - before + after


@dataclass(frozen=True)
class _Zone:
    name: str  # "package-0", "psys"
    energy: Path
    max_range_uj: int


class RaplMeter:
    """The top-level RAPL zones under ``root``, read every tick, joules accumulated.

    ``absent`` says why there is no meter (not Linux, no powercap, counters root-only);
    then every other method does nothing.
    """

    def __init__(self, root: Path = POWERCAP_ROOT) -> None:
        self.zones: list[_Zone] = []
        self.absent: str | None = None
        self._last: list[int] = []
        self._joules: list[float] = []
        self._t0 = self._t_last = 0.0
        self.absent = self._find(root)

    def _find(self, root: Path) -> str | None:
        if not root.is_dir():
            return f"no {root} (RAPL needs Linux on an Intel or AMD CPU)"
        # intel-rapl:0, intel-rapl:1 (packages or psys); not intel-rapl:0:0 (subzones).
        found = sorted(p for p in root.glob("intel-rapl*") if p.name.count(":") == 1 and p.is_dir())
        if not found:
            return f"no RAPL zones under {root}"
        problems = []
        for zone in found:
            try:
                name = (zone / "name").read_text().strip() or zone.name
                max_range = int((zone / "max_energy_range_uj").read_text())
                int((zone / "energy_uj").read_text())
            except PermissionError:
                problems.append(
                    f"{zone / 'energy_uj'} is readable by root only (Linux 5.10+, CVE-2020-8694)"
                )
                continue
            except (OSError, ValueError) as exc:
                problems.append(f"{zone}: cannot read: {exc}")
                continue
            self.zones.append(_Zone(name, zone / "energy_uj", max_range))
        if not self.zones:
            return "; ".join(problems)
        return None

    def _read(self) -> list[int | None]:
        out: list[int | None] = []
        for zone in self.zones:
            try:
                out.append(int(zone.energy.read_text()))
            except (OSError, ValueError):
                out.append(None)
        return out

    def start(self, t_s: float) -> None:
        self._last = [v if v is not None else -1 for v in self._read()]
        self._joules = [0.0] * len(self.zones)
        self._t0 = self._t_last = t_s

    def tick(self, t_s: float) -> dict[str, float | None]:
        """Accumulate since the last tick; the power of each zone over it (W) by column."""
        powers: dict[str, float | None] = {}
        dt = t_s - self._t_last
        for i, (zone, now) in enumerate(zip(self.zones, self._read(), strict=True)):
            before = self._last[i]
            column = f"rapl_{zone.name}_power_w"
            if now is None or before < 0:
                powers[column] = None
                if now is not None:
                    self._last[i] = now
                continue
            joules = counter_delta(before, now, zone.max_range_uj) / 1e6
            self._joules[i] += joules
            self._last[i] = now
            powers[column] = joules / dt if dt > 0 else None
        self._t_last = t_s
        return powers

    def finish(self, output_tokens: int | None) -> list[EnergyUse]:
        seconds = self._t_last - self._t0
        return [
            energy_use(f"rapl {zone.name}", "RAPL counter", joules, seconds, output_tokens)
            for zone, joules in zip(self.zones, self._joules, strict=True)
        ]
