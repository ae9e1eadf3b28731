"""The scenario's ``[load]`` section read and checked into a ``LoadSpec``, with its limits.

The limits (requests per stage, concurrency, lowest rate, 64-bit integers) are not taste:
the plan holds every request's due time in memory as a finite number of ns, and the result
file is written with orjson, which refuses integers wider than 64 bits. The command line's
``--concurrency``, ``--rate`` and ``--requests`` are held to the same limits
(:mod:`loadbench.scenario.overrides`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from loadbench.scenario.checks import Checker
from loadbench.scenario.model import Arrival, LoadMode, LoadSpec, SearchSpec

MAX_STAGE_REQUESTS = 1_000_000  # warmup + measured, per stage: the plan holds them all
MAX_CONCURRENCY = 100_000
MAX_DURATION_S = 7 * 86_400.0
MIN_RATE = 0.001  # requests/s; keeps every due time a finite, reasonable number
MIN_BURSTINESS, MAX_BURSTINESS = 0.01, 100.0  # gap CV from 10 down to 0.1
INT64 = 2**63

# A rate search's bisections: at most log2 of this, so precision >= (high - low) / this.
MAX_SEARCH_SPLIT = 2**20
_SEARCH_KEYS = ("over", "low", "high", "precision")
MAX_WORKERS = 1024  # worker processes per stage; past a few dozen, spread them with --ray
_LOAD_KEYS = tuple(f.name for f in dataclasses.fields(LoadSpec) if f.name != "mode")


def read_load(c: Checker, doc: Mapping[str, object]) -> LoadSpec | None:
    raw = c.table(doc, "load", "load", _LOAD_KEYS)
    if raw is None:
        return None
    mode = LoadMode.RATE if "rate" in raw else LoadMode.CONCURRENCY
    concurrency: list[int | None] = []
    rate: list[float | None] = []
    search: SearchSpec | None = None
    workload = doc.get("workload")
    trace = isinstance(workload, Mapping) and "trace" in workload
    if trace:
        mode = LoadMode.RATE  # the trace's timestamps are the schedule
        if "concurrency" in raw or "rate" in raw or "search" in raw or "ramp_s" in raw:
            c.add(
                "load: expected no concurrency, rate, search or ramp_s with a [workload] trace: "
                "its timestamps are the schedule (scale them with trace.speedup or --speedup)"
            )
    elif "search" in raw:
        if "concurrency" in raw or "rate" in raw:
            c.add("load: expected either search or a concurrency or rate list, got both")
        search = read_search(c, raw["search"], doc)
        mode = search.over if search is not None else mode
    elif ("concurrency" in raw) == ("rate" in raw):
        c.add("load: expected exactly one of concurrency or rate")
    elif mode is LoadMode.CONCURRENCY:
        items = c.each("load.concurrency", raw["concurrency"], "positive integers")
        concurrency = (
            [None] if items is None else [c.integer(k, v, 1, MAX_CONCURRENCY) for k, v in items]
        )
    else:
        items = c.each("load.rate", raw["rate"], "positive numbers")
        for k, v in items or [("", None)]:
            x = None if items is None else c.number(k, v, positive=True)
            if x is not None and x < MIN_RATE:
                c.expected(k, f"a rate of at least {MIN_RATE:g} requests/s", v)
                x = None
            rate.append(x)
    arrival = c.choice("load.arrival", raw.get("arrival", "constant"), Arrival)
    burstiness = c.number(
        "load.burstiness",
        raw.get("burstiness", 1.0),
        low=MIN_BURSTINESS,
        high=MAX_BURSTINESS,
        want=f"a number from {MIN_BURSTINESS:g} to {MAX_BURSTINESS:g}",
    )
    if "burstiness" in raw and mode is LoadMode.RATE and arrival not in (None, Arrival.GAMMA):
        c.add(f"load.burstiness: expected arrival = 'gamma' with it, got arrival = {arrival!r}")
    max_concurrency: int | None = None
    if "max_concurrency" in raw:
        max_concurrency = c.integer(
            "load.max_concurrency", raw["max_concurrency"], 1, MAX_CONCURRENCY
        )
    requests: int | None = None
    duration_s: float | None = None
    given = ("requests" in raw) + ("duration_s" in raw)
    if given == 2 or (given == 0 and not trace):  # a trace alone replays all of it
        c.add("load: expected exactly one of requests or duration_s")
    elif "requests" in raw:
        requests = c.integer("load.requests", raw["requests"], 1, MAX_STAGE_REQUESTS)
    elif "duration_s" in raw:
        duration_s = c.number(
            "load.duration_s", raw["duration_s"], positive=True, high=MAX_DURATION_S
        )
    warmup = c.integer("load.warmup", raw.get("warmup", 0), 0, MAX_STAGE_REQUESTS)
    seed = c.integer("load.seed", raw.get("seed", 0), -INT64, INT64 - 1)
    max_error_rate: float | None = None
    if "max_error_rate" in raw:
        max_error_rate = c.number(
            "load.max_error_rate",
            raw["max_error_rate"],
            low=0.0,
            high=1.0,
            want="a fraction from 0 to 1",
        )
    max_duration_s: float | None = None
    if "max_duration_s" in raw:
        max_duration_s = c.number(
            "load.max_duration_s", raw["max_duration_s"], positive=True, high=MAX_DURATION_S
        )
    ramp_s: float | None = None
    if "ramp_s" in raw:
        ramp_s = c.number("load.ramp_s", raw["ramp_s"], positive=True, high=MAX_DURATION_S)
    workers: int | str | None = None
    if "workers" in raw:
        value = raw["workers"]
        if value == "auto" or (type(value) is int and 1 <= value <= MAX_WORKERS):
            workers = value if isinstance(value, int) else "auto"
        else:
            c.expected("load.workers", f'an integer from 1 to {MAX_WORKERS} or "auto"', value)
    if (
        None in concurrency
        or None in rate
        or (not concurrency and not rate and search is None and not trace)
        or ("ramp_s" in raw and ramp_s is None)
        or arrival is None
        or burstiness is None
        or (requests is None and duration_s is None and not trace)
        or warmup is None
        or seed is None
    ):
        return None
    return LoadSpec(
        mode=mode,
        concurrency=tuple(v for v in concurrency if v is not None),
        rate=tuple(v for v in rate if v is not None),
        arrival=Arrival(arrival),
        burstiness=burstiness,
        max_concurrency=max_concurrency,
        requests=requests,
        duration_s=duration_s,
        warmup=warmup,
        seed=seed,
        max_error_rate=max_error_rate,
        max_duration_s=max_duration_s,
        workers=workers,
        ramp_s=ramp_s,
        search=search,
    )


def read_search(c: Checker, value: object, doc: Mapping[str, object]) -> SearchSpec | None:
    """``[load] search = { over, low, high, precision }``, each bad part one problem.

    Concurrency bounds and precision are integers (a stage runs a whole number of
    workers); a rate's precision defaults to a sixteenth of the bracket, a concurrency's
    to 1. A search judges its stages against ``[slo]``, so it needs one.
    """
    if not isinstance(value, dict):
        c.expected("load.search", 'a table such as { over = "rate", low = 1, high = 16 }', value)
        return None
    c.unknown_keys("load.search", value, _SEARCH_KEYS)
    missing = [k for k in ("over", "low", "high") if k not in value]
    if missing:
        c.add(f"load.search: expected over, low and high, missing {', '.join(missing)}")
    slo = doc.get("slo")
    if not isinstance(slo, Mapping) or not slo:
        c.add("load.search: a search needs at least one [slo] limit")
    over_text = (
        c.choice("load.search.over", value.get("over"), LoadMode) if "over" in value else None
    )
    if missing or over_text is None:
        return None
    over = LoadMode(over_text)
    low, high = (_search_bound(c, over, k, value[k]) for k in ("low", "high"))
    precision: float | None = None
    if "precision" in value:
        key, raw_p = "load.search.precision", value["precision"]
        if over is LoadMode.CONCURRENCY:
            precision = c.integer(key, raw_p, 1, MAX_CONCURRENCY)
        else:
            precision = c.number(key, raw_p, positive=True)
    if low is None or high is None:
        return None
    if low >= high:
        c.add(
            f"load.search: expected low < high, got low = {low:g} and high = {high:g}: "
            "the bracket is empty"
        )
        return None
    if precision is None and "precision" in value:
        return None
    if precision is None:
        precision = 1 if over is LoadMode.CONCURRENCY else (high - low) / 16
    elif over is LoadMode.RATE and precision * MAX_SEARCH_SPLIT < high - low:
        c.add(
            f"load.search.precision: expected at least (high - low) / {MAX_SEARCH_SPLIT} = "
            f"{(high - low) / MAX_SEARCH_SPLIT:.3g}, got {precision:g}"
        )
        return None
    return SearchSpec(over=over, low=low, high=high, precision=precision)


def _search_bound(c: Checker, over: LoadMode, name: str, value: object) -> float | None:
    key = f"load.search.{name}"
    if over is LoadMode.CONCURRENCY:
        return c.integer(key, value, 1, MAX_CONCURRENCY)
    x = c.number(key, value, positive=True)
    if x is not None and x < MIN_RATE:
        c.expected(key, f"a rate of at least {MIN_RATE:g} requests/s", value)
        return None
    return x


def stage_size_problems(load: LoadSpec) -> list[str]:
    """Cross-field limits: how many due times one stage's plan would hold."""
    problems: list[str] = []
    if load.requests is not None and load.warmup + load.requests > MAX_STAGE_REQUESTS:
        total = load.warmup + load.requests
        problems.append(f"load: expected warmup + requests <= {MAX_STAGE_REQUESTS}, got {total}")
    if load.mode is LoadMode.RATE and load.duration_s is not None:
        search_high = (load.search.high,) if load.search is not None else ()
        for r in (*load.rate, *search_high):
            total_f = load.warmup + r * load.duration_s
            if total_f > MAX_STAGE_REQUESTS:
                problems.append(
                    f"load: expected warmup + rate × duration_s <= {MAX_STAGE_REQUESTS}, "
                    f"got {total_f:.0f} at rate {r:g}"
                )
    return problems
