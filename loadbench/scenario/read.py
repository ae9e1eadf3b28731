"""The scenario file read, checked and resolved into a ``Scenario``.

Kept apart from the data model (``model``), which imports nothing from here, so it reads
on its own. The checks collect every problem in the file and raise one ``ScenarioError``
that lists them all, each as ``key.path: expected <what>, got <value>``, so a user fixes a
file in one pass. Nothing else ever leaves ``load_scenario``, whatever the bytes: it is
fuzzed.

The limits below (requests per stage, concurrency, lowest rate, 64-bit integers) are not
taste: the plan holds every request's due time in memory as a finite number of ns, and the
result file is written with orjson, which refuses integers wider than 64 bits.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from loadbench.errors import ScenarioError
from loadbench.scenario.checks import Checker, is_int
from loadbench.scenario.model import (
    BASE_URL_ENV,
    Api,
    Arrival,
    LaunchSpec,
    LoadMode,
    LoadSpec,
    RequestSpec,
    Scenario,
    SimulateSpec,
    Target,
)
from loadbench.thresholds import Threshold, slo_thresholds

__all__ = ["load_scenario"]

MAX_STAGE_REQUESTS = 1_000_000  # warmup + measured, per stage: the plan holds them all
MAX_CONCURRENCY = 100_000
MAX_DURATION_S = 7 * 86_400.0
MIN_RATE = 0.001  # requests/s; keeps every due time a finite, reasonable number
MIN_BURSTINESS, MAX_BURSTINESS = 0.01, 100.0  # gap CV from 10 down to 0.1
MAX_NAME = 64
MAX_EXTRA_DEPTH = 32
INT64 = 2**63

_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SET_BY_LOADBENCH = ("model", "messages", "prompt", "stream", "max_tokens", "temperature")

_TOP_KEYS = ("name", "target", "models", "prompts", "request", "load", "slo")
_TARGET_KEYS = (
    "base_url",
    "api",
    "api_key_env",
    "timeout_s",
    "simulate",
    "metrics_url",
    "launch",
)
_LAUNCH_KEYS = tuple(f.name for f in dataclasses.fields(LaunchSpec))
_SIM_KEYS = tuple(f.name for f in dataclasses.fields(SimulateSpec))
# The fault rates (``sim.faults.RATE_FIELDS``, the same names; a test holds them equal).
_SIM_FAULTS = tuple(n for n in _SIM_KEYS if n.endswith("_rate"))
_PROMPT_KEYS = ("items", "file")
_REQUEST_KEYS = ("max_tokens", "temperature", "stream", "extra")
_LOAD_KEYS = tuple(f.name for f in dataclasses.fields(LoadSpec) if f.name != "mode")


def load_scenario(path: str | Path, env: Mapping[str, str] | None = None) -> Scenario:
    """Read, check and resolve the scenario at ``path``; raises only ``ScenarioError``.

    ``env`` (``os.environ`` when None) may redirect the target: the first of
    ``LOADBENCH_BASE_URL``, ``OPENAI_BASE_URL`` and ``FOUNDRY_LOCAL_ENDPOINT`` that is set
    and not blank replaces ``target.base_url`` and drops ``[target.simulate]``, so the same
    file aims at a real server. An override with no path gets ``/v1`` appended, and so does
    a ``FOUNDRY_LOCAL_ENDPOINT`` that does not end in ``/v1``. ``--base-url`` on the command
    line beats all of them (``apply_overrides``). The file itself is still checked whole.
    """
    if env is None:
        env = os.environ
    shown = str(path)
    file = Path(path)
    text, problem = _read_text(file)
    if problem is not None:
        raise ScenarioError(shown, [problem])
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(shown, [_toml_problem(str(exc))]) from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise ScenarioError(shown, ["invalid TOML: nested too deeply"]) from None
    except ValueError as exc:  # an integer past Python's 4300-digit conversion limit
        raise ScenarioError(shown, [f"invalid TOML: {str(exc).partition(':')[0]}"]) from None
    c = Checker()
    scenario = _build(c, doc, file, env)
    if scenario is None:
        raise ScenarioError(shown, c.problems)
    return scenario


# -- reading files -------------------------------------------------------------------------


def _read_text(file: Path, label: str = "") -> tuple[str, str | None]:
    """The file's text, or the problem. A UTF-8 BOM (Windows editors add one) is accepted.

    Anything but a regular file is refused before opening: reading a FIFO would block.
    """
    try:
        mode = file.stat().st_mode
        if stat.S_ISDIR(mode):
            return "", f"cannot read{label}: Is a directory"
        if not stat.S_ISREG(mode):
            return "", f"cannot read{label}: not a regular file"
        data = file.read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return "", f"cannot read{label}: {reason}"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        where = f" in{label}" if label else ""
        return "", f"expected UTF-8 text{where}, got byte 0x{data[exc.start]:02x} at {exc.start}"


def _toml_problem(message: str) -> str:
    """tomllib's "Invalid value (at line 3, column 9)" as "line 3, column 9: invalid TOML: …"."""
    m = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message, re.DOTALL)
    if m is None:
        return f"invalid TOML: {message}"
    return f"line {m[2]}, column {m[3]}: invalid TOML: {m[1]}"


def _read_prompt_file(c: Checker, folder: Path, name: str) -> tuple[str, ...]:
    """Prompts from a JSON list or JSONL, each entry a string or ``{"prompt": string}``.

    A file whose first character is ``[`` is one JSON document; anything else is JSONL.
    At most five bad entries are listed, then a count: a big file should not flood.
    """
    text, problem = _read_text(folder / name, f" {name!r}")
    if problem is not None:
        c.add(f"prompts.file: {problem}")
        return ()
    where = f"prompts.file: {name!r}"
    entries: list[tuple[str, object]] = []
    if text.lstrip().startswith("["):
        try:
            doc = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, or an integer of 4300+ digits
            c.add(f"{where}: invalid JSON: {_json_reason(exc)}")
            return ()
        except RecursionError:
            c.add(f"{where}: invalid JSON: nested too deeply")
            return ()
        entries = [(f"item {i}", v) for i, v in enumerate(doc)] if isinstance(doc, list) else []
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append((f"line {number}", json.loads(line)))
            except ValueError as exc:
                c.add(f"{where} line {number}: invalid JSON: {_json_reason(exc)}")
            except RecursionError:
                c.add(f"{where} line {number}: invalid JSON: nested too deeply")
    prompts: list[str] = []
    bad = 0
    for label, value in entries:
        prompt = value.get("prompt") if isinstance(value, dict) else value
        if isinstance(prompt, str) and prompt.strip() and _encodable(prompt):
            prompts.append(prompt)
            continue
        bad += 1
        if bad <= 5:
            want = 'a non-empty string or an object with a "prompt" string'
            c.expected(f"{where} {label}", want, value)
    if bad > 5:
        c.add(f"{where}: and {bad - 5} more entries like those")
    if not entries and (text.strip() == "" or text.lstrip().startswith("[")):
        c.add(f"prompts.file: expected at least one prompt in {name!r}, got none")
    return tuple(prompts)


def _json_reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return str(exc)  # with its line and column
    return str(exc).partition(":")[0]  # the 4300-digit limit's message, without its advice


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON "\ud800" escape
        return False
    return True


# -- the sections --------------------------------------------------------------------------


def _build(
    c: Checker, doc: dict[str, object], file: Path, env: Mapping[str, str]
) -> Scenario | None:
    c.unknown_keys("top level", doc, _TOP_KEYS)
    name = _name(c, doc, file)
    target = _target(c, doc, env)
    models = _models(c, doc)
    prompts, prompts_file = _prompts(c, doc, file.parent)
    request = _request(c, doc)
    load = _load(c, doc)
    slo: tuple[Threshold, ...] = ()
    if "slo" in doc:
        slo, problems = slo_thresholds(doc["slo"])
        c.problems.extend(problems)
    if load is not None and not c.problems:
        c.problems.extend(stage_size_problems(load))
    if c.problems or name is None or target is None or request is None or load is None:
        return None
    return Scenario(name, str(file), target, models, prompts, prompts_file, request, load, slo)


def _name(c: Checker, doc: Mapping[str, object], file: Path) -> str | None:
    """``name``, else the file's stem if that qualifies: it becomes part of a file name."""
    value = doc.get("name", file.stem)
    if isinstance(value, str) and _NAME_RE.fullmatch(value) and len(value) <= MAX_NAME:
        return value
    want = f"up to {MAX_NAME} letters, digits, '.', '_' or '-'"
    if "name" in doc:
        c.expected("name", want, value)
    else:
        c.add(f"name: expected {want}, got nothing (the file name {file.stem!r} does not do)")
    return None


def _target(c: Checker, doc: Mapping[str, object], env: Mapping[str, str]) -> Target | None:
    raw = c.table(doc, "target", "target", _TARGET_KEYS)
    if raw is None:
        return None
    base_url = c.url("target.base_url", raw["base_url"]) if "base_url" in raw else None
    api = c.choice("target.api", raw.get("api", "chat"), Api)
    key_env: str | None = None
    if "api_key_env" in raw:
        value = raw["api_key_env"]
        if isinstance(value, str) and _ENV_NAME_RE.fullmatch(value):
            key_env = value
        elif isinstance(value, str):  # perhaps the key itself: never print it
            c.add(
                "target.api_key_env: expected the name of an environment variable, "
                "got something else (not shown: it may be a key)"
            )
        else:
            c.expected("target.api_key_env", "the name of an environment variable", value)
    timeout = c.number(
        "target.timeout_s", raw.get("timeout_s", 120.0), positive=True, high=86_400.0
    )
    simulate = _simulate(c, raw)
    launch = _launch(c, raw)
    if "base_url" in raw and "simulate" in raw:
        c.add("target: expected base_url or [target.simulate], not both")
    elif "base_url" not in raw and "simulate" not in raw and not _env_url(env):
        c.add("target: expected base_url or [target.simulate]")
    if "launch" in raw and "simulate" in raw:
        c.add("target: expected [target.simulate] or [target.launch], not both")
    elif "launch" in raw and "base_url" not in raw:
        c.add("target.launch: expected target.base_url too: the address the server listens on")
    var = _env_url(env)
    if var is not None:  # the target is elsewhere: nothing to simulate or launch
        foundry = var == "FOUNDRY_LOCAL_ENDPOINT"
        base_url, simulate = c.url(var, env[var], override=True, foundry=foundry), None
        launch = None
    metrics_url = c.url("target.metrics_url", raw["metrics_url"]) if "metrics_url" in raw else None
    if api is None or timeout is None or (base_url is None and simulate is None):
        return None
    return Target(base_url, Api(api), key_env, timeout, simulate, metrics_url, launch)


def _launch(c: Checker, target: Mapping[str, object]) -> LaunchSpec | None:
    if "launch" not in target:
        return None
    raw = c.table(target, "launch", "target.launch", _LAUNCH_KEYS)
    if raw is None:
        return None
    want = "a non-empty list of strings: the program and its arguments"
    command = raw.get("command")
    if command is None:
        c.add(f"target.launch.command: expected {want}, got nothing")
    elif not (
        isinstance(command, list)
        and command
        and all(isinstance(a, str) for a in command)
        and command[0].strip()
    ):
        c.expected("target.launch.command", want, command)
        command = None
    ready_url = c.url("target.launch.ready_url", raw["ready_url"]) if "ready_url" in raw else None
    timeout = c.number(
        "target.launch.ready_timeout_s",
        raw.get("ready_timeout_s", 300.0),
        positive=True,
        high=86_400.0,
    )
    if command is None or timeout is None or ("ready_url" in raw and ready_url is None):
        return None
    return LaunchSpec(tuple(command), ready_url, timeout)


def _env_url(env: Mapping[str, str]) -> str | None:
    """The first of ``BASE_URL_ENV`` set to something other than blanks."""
    return next((var for var in BASE_URL_ENV if env.get(var, "").strip()), None)


def _simulate(c: Checker, target: Mapping[str, object]) -> SimulateSpec | None:
    """The same rules as ``SimConfig.validate``, with the file's key paths."""
    if "simulate" not in target:
        return None
    raw = c.table(target, "simulate", "target.simulate", _SIM_KEYS)
    if raw is None:
        return None
    values: dict[str, object] = {}
    for name, value in raw.items():
        key = f"target.simulate.{name}"
        if name in ("slots", "max_tokens_default"):
            values[name] = c.integer(key, value, 1, MAX_CONCURRENCY)
        elif name == "seed":
            values[name] = c.integer(key, value, -INT64, INT64 - 1)
        elif name in _SIM_FAULTS:
            values[name] = c.number(key, value, low=0.0, high=1.0, want="a number from 0 to 1")
        elif name in _SIM_KEYS:
            values[name] = c.number(key, value, low=0.0)
    if None in values.values():
        return None
    spec = SimulateSpec(**values)  # type: ignore[arg-type]  # each value checked above
    total = sum(getattr(spec, name) for name in _SIM_FAULTS)
    if total > 1.0 + 1e-9:
        c.add(
            f"target.simulate: expected the fault rates (*_rate) to add up to at most 1, "
            f"got {total:g}"
        )
        return None
    return spec


def _models(c: Checker, doc: Mapping[str, object]) -> tuple[str, ...]:
    want = "at least one [[models]] entry with a name"
    value = doc.get("models")
    if value is None:
        c.add(f"models: expected {want}")
        return ()
    if not isinstance(value, list) or not value:
        c.expected("models", want, value)
        return ()
    names: list[str] = []
    for i, entry in enumerate(value):
        key = f"models[{i}]"
        name: str | None = None
        if isinstance(entry, str):  # models = ["a", "b"] is read the same
            name = c.string(key, entry)
        elif isinstance(entry, dict):
            c.unknown_keys(key, entry, ("name",))
            if "name" in entry:
                name = c.string(f"{key}.name", entry["name"])
            else:
                c.add(f"{key}.name: expected a non-empty string, got nothing")
        else:
            c.expected(key, "a table with a name", entry)
        if name is not None and name in names:
            c.expected(key, "each model once", name)
        elif name is not None:
            names.append(name)
    return tuple(names)


def _prompts(
    c: Checker, doc: Mapping[str, object], folder: Path
) -> tuple[tuple[str, ...], str | None]:
    raw = c.table(doc, "prompts", "prompts", _PROMPT_KEYS)
    if raw is None:
        return (), None
    if ("items" in raw) == ("file" in raw):
        c.add("prompts: expected exactly one of items or file")
        return (), None
    if "file" in raw:
        name = c.string("prompts.file", raw["file"])
        return ((), None) if name is None else (_read_prompt_file(c, folder, name), name)
    items = raw["items"]
    if not isinstance(items, list) or not items:
        c.expected("prompts.items", "a non-empty list of strings", items)
        return (), None
    good = [c.string(f"prompts.items[{i}]", v) for i, v in enumerate(items)]
    return tuple(v for v in good if v is not None), None


def _request(c: Checker, doc: Mapping[str, object]) -> RequestSpec | None:
    raw = c.table(doc, "request", "request", _REQUEST_KEYS)
    if raw is None:
        return None
    max_tokens = c.integer("request.max_tokens", raw.get("max_tokens", 128), 1, INT64 - 1)
    temperature: float | None = None
    if "temperature" in raw:
        temperature = c.number("request.temperature", raw["temperature"], low=0.0)
    stream = raw.get("stream", True)
    if not isinstance(stream, bool):
        c.expected("request.stream", "true or false", stream)
    extra = _extra(c, raw.get("extra", {}))
    if max_tokens is None or not isinstance(stream, bool) or extra is None:
        return None
    return RequestSpec(max_tokens, temperature, stream, MappingProxyType(extra))


def _extra(c: Checker, value: object) -> dict[str, object] | None:
    """Goes into the body as written, so it must be JSON: no dates, NaN or huge integers.

    Keys loadbench sets itself are refused: merged last, they would silently replace the
    model, the prompt or a setting that has its own key.
    """
    if not isinstance(value, dict):
        c.expected("request.extra", "a table", value)
        return None
    before = len(c.problems)
    for name in value:
        if name in _SET_BY_LOADBENCH:
            own = f"request.{name}" if name in _REQUEST_KEYS else "[[models]] and [prompts]"
            c.add(f"request.extra: key {name!r} is set by loadbench; use {own}")
    stack: list[tuple[str, object, int]] = [("request.extra", value, 0)]
    while stack:  # iterative, and bounded in depth, so deep nesting stays a problem
        key, item, depth = stack.pop()
        if depth > MAX_EXTRA_DEPTH:
            c.expected("request.extra", f"at most {MAX_EXTRA_DEPTH} levels of nesting", item)
            break
        if isinstance(item, dict):
            stack.extend((f"{key}.{k}", v, depth + 1) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((f"{key}[{i}]", v, depth + 1) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, float) and not math.isfinite(item):
            c.expected(key, "a finite number", item)
        elif is_int(item) and not -INT64 <= item < 2**64:
            c.expected(key, "a 64-bit integer", item)
        elif not isinstance(item, str | int | float | bool):
            c.expected(key, "a string, number, boolean, array or table", item)
    return value if len(c.problems) == before else None


def _load(c: Checker, doc: Mapping[str, object]) -> LoadSpec | None:
    raw = c.table(doc, "load", "load", _LOAD_KEYS)
    if raw is None:
        return None
    mode = LoadMode.RATE if "rate" in raw else LoadMode.CONCURRENCY
    concurrency: list[int | None] = []
    rate: list[float | None] = []
    if ("concurrency" in raw) == ("rate" in raw):
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
    if ("requests" in raw) == ("duration_s" in raw):
        c.add("load: expected exactly one of requests or duration_s")
    elif "requests" in raw:
        requests = c.integer("load.requests", raw["requests"], 1, MAX_STAGE_REQUESTS)
    else:
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
    if (
        None in concurrency
        or None in rate
        or (not concurrency and not rate)
        or arrival is None
        or burstiness is None
        or (requests is None and duration_s is None)
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
    )


def stage_size_problems(load: LoadSpec) -> list[str]:
    """Cross-field limits: how many due times one stage's plan would hold."""
    problems: list[str] = []
    if load.requests is not None and load.warmup + load.requests > MAX_STAGE_REQUESTS:
        total = load.warmup + load.requests
        problems.append(f"load: expected warmup + requests <= {MAX_STAGE_REQUESTS}, got {total}")
    if load.mode is LoadMode.RATE and load.duration_s is not None:
        for r in load.rate:
            total_f = load.warmup + r * load.duration_s
            if total_f > MAX_STAGE_REQUESTS:
                problems.append(
                    f"load: expected warmup + rate × duration_s <= {MAX_STAGE_REQUESTS}, "
                    f"got {total_f:.0f} at rate {r:g}"
                )
    return problems
