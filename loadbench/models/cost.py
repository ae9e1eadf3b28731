"""What a million output tokens cost in electricity, per stage, from watts and tokens/s.

    cost = watts × (10^6 / output tokens per second) / 3.6×10^6 × price per kWh

(the seconds a million tokens take at the stage's rate, times the watts, is joules; 3.6×10^6
joules are one kWh). The watts are the stage's own measurement where the monitor read
one (``stage["server"]["energy"]``: NVML GPU joules first, as a model served on a GPU
draws its power there, else the RAPL CPU packages, ``psys`` left out when packages are
present), each stage with its own watts since a loaded GPU draws more than an idle one;
otherwise the declared ``device_watts`` for every stage. The energy covers the stage's
warm-up too, and is the whole device's, not the server's share: on a shared machine the
figure is an upper bound. Electricity only: no hardware, no cooling.

Pure: the model's stage dicts in, the result document's ``cost`` block out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

JOULES_PER_KWH = 3.6e6


def cost_per_million(watts: float, output_tokens_per_s: float, price_per_kwh: float) -> float:
    """The formula above; ``output_tokens_per_s`` must be positive."""
    return watts * (1e6 / output_tokens_per_s) / JOULES_PER_KWH * price_per_kwh


def measured_watts(stage: Mapping[str, Any]) -> tuple[float, str] | None:
    """(mean watts, ``measured-nvml`` or ``measured-rapl``) of one stage, or None."""
    server = stage.get("server")
    meters = (server.get("energy") if isinstance(server, Mapping) else None) or ()
    gpu = [e for e in meters if str(e.get("meter", "")).startswith("gpu")]
    rapl = [e for e in meters if str(e.get("meter", "")).startswith("rapl")]
    if any("package" in str(e["meter"]) for e in rapl):
        rapl = [e for e in rapl if "psys" not in str(e["meter"])]
    for found, source in ((gpu, "measured-nvml"), (rapl, "measured-rapl")):
        joules = sum(float(e["joules"]) for e in found)
        seconds = max((float(e["seconds"]) for e in found), default=0.0)
        if found and seconds > 0:
            return joules / seconds, source
    return None


def _significant(value: float) -> float:
    return float(f"{value:.6g}")


def model_cost(
    stages: Sequence[Mapping[str, Any]],
    *,
    price_per_kwh: float | None,
    currency: str = "EUR",
    device_watts: float | None = None,
) -> dict[str, Any] | None:
    """The ``cost`` block for one model's stages, or None without a price or any watts.

    Measured watts are used when every stage that produced tokens has them, so that one
    table never mixes measured and declared figures; ``watts`` is then the mean over those
    stages (each stage's cost uses its own). Stages without output tokens are left out.
    Costs keep 6 significant digits: cheap power and fast models give small numbers.
    """
    if price_per_kwh is None:
        return None
    producing = [s for s in stages if float(s["throughput"]["output_tokens_per_s"]) > 0]
    measured = [measured_watts(s) for s in producing]
    sources = {m[1] for m in measured if m is not None}
    if producing and None not in measured and len(sources) == 1:
        watts = [m[0] for m in measured if m is not None]
        source = sources.pop()
    elif device_watts is not None:
        watts = [float(device_watts)] * len(producing)
        source = "declared"
    else:
        return None
    per_million = {
        str(s["label"]): _significant(
            cost_per_million(w, float(s["throughput"]["output_tokens_per_s"]), price_per_kwh)
        )
        for s, w in zip(producing, watts, strict=True)
    }
    mean_watts = sum(watts) / len(watts) if watts else float(device_watts or 0.0)
    return {
        "currency": currency,
        "price_per_kwh": price_per_kwh,
        "watts": round(mean_watts, 3),
        "watts_source": source,
        "per_million_output_tokens": per_million,
    }
