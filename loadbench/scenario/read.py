"""The scenario file read, checked and resolved into a ``Scenario``.

Kept apart from the data model (``model``), which imports nothing from here, so it reads
on its own. The checks collect every problem in the file and raise one ``ScenarioError``
that lists them all, each as ``key.path: expected <what>, got <value>``, so a user fixes a
file in one pass. Nothing else ever leaves ``load_scenario``, whatever the bytes: it is
fuzzed.

Reading bytes from disk (the file, a prompt file) is :mod:`loadbench.scenario.read_files`;
the ``[load]`` section and the limits that come from the plan and the result file are
:mod:`loadbench.scenario.read_load`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from loadbench.errors import ScenarioError
from loadbench.scenario.checks import Checker, is_int
from loadbench.scenario.model import (
    BASE_URL_ENV,
    Api,
    LaunchSpec,
    MonitorSpec,
    RequestSpec,
    Scenario,
    SimulatedModel,
    SimulateSpec,
    Target,
)
from loadbench.scenario.read_files import read_text, toml_problem
from loadbench.scenario.read_load import INT64, MAX_CONCURRENCY, read_load, stage_size_problems
from loadbench.scenario.read_models import (
    PromptSet,
    bench_env,
    read_catalog,
    read_cost,
    read_model_entries,
    read_prompt_items,
    read_prompt_set,
    read_quality,
)
from loadbench.scenario.read_workload import read_workload
from loadbench.thresholds import Threshold, slo_thresholds

__all__ = ["load_scenario"]

MAX_NAME = 64
MAX_EXTRA_DEPTH = 32

_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SET_BY_LOADBENCH = ("model", "messages", "prompt", "stream", "max_tokens", "temperature")

_TOP_KEYS = (
    "name",
    "target",
    "models",
    "models_catalog",
    "prompts",
    "request",
    "load",
    "slo",
    "monitor",
    "quality",
    "cost",
    "workload",
)
_TARGET_KEYS = (
    "base_url",
    "api",
    "api_key_env",
    "timeout_s",
    "simulate",
    "metrics_url",
    "launch",
    "foundry_local",
    "connections",
    "quickack",
)
_LAUNCH_KEYS = tuple(f.name for f in dataclasses.fields(LaunchSpec))
_SIM_KEYS = tuple(f.name for f in dataclasses.fields(SimulateSpec))
# Shares from 0 to 1 that are not faults: outside the faults' sum (and the simulator's draw).
_SIM_SHARES = ("early_stop_rate",)
# The fault rates (``sim.faults.RATE_FIELDS``, the same names; a test holds them equal).
_SIM_FAULTS = tuple(n for n in _SIM_KEYS if n.endswith("_rate") and n not in _SIM_SHARES)
_PROMPT_KEYS = ("items", "file")
_REQUEST_KEYS = ("max_tokens", "temperature", "stream", "extra")


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
    text, problem = read_text(file)
    if problem is not None:
        raise ScenarioError(shown, [problem])
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(shown, [toml_problem(str(exc))]) from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise ScenarioError(shown, ["invalid TOML: nested too deeply"]) from None
    except ValueError as exc:  # an integer past Python's 4300-digit conversion limit
        raise ScenarioError(shown, [f"invalid TOML: {str(exc).partition(':')[0]}"]) from None
    c = Checker()
    scenario = _build(c, doc, file, env)
    if scenario is None:
        raise ScenarioError(shown, c.problems)
    return scenario


# -- the sections --------------------------------------------------------------------------


def _build(
    c: Checker, doc: dict[str, object], file: Path, env: Mapping[str, str]
) -> Scenario | None:
    c.unknown_keys("top level", doc, _TOP_KEYS)
    name = _name(c, doc, file)
    target = _target(c, doc, env)
    specs = read_model_entries(c, doc, _extra)
    catalog_file = read_catalog(c, doc)
    prompt_set, prompts_file = _prompts(c, doc, file.parent)
    request = _request(c, doc)
    load = read_load(c, doc)
    monitor = _monitor(c, doc)
    quality, cost = read_quality(c, doc), read_cost(c, doc)
    workload = read_workload(c, doc, file.parent)
    specs, prompt_set, request, load, applied = bench_env(c, env, specs, prompt_set, request, load)
    slo: tuple[Threshold, ...] = ()
    if "slo" in doc:
        slo, problems = slo_thresholds(doc["slo"])
        c.problems.extend(problems)
    if load is not None and not c.problems:
        c.problems.extend(stage_size_problems(load))
    if c.problems or name is None or target is None or request is None or load is None:
        return None
    if monitor is None:
        return None
    prompts, ids, aspects = prompt_set
    models = tuple(m.name for m in specs)
    return Scenario(
        name,
        str(file),
        target,
        models,
        prompts,
        prompts_file,
        request,
        load,
        slo,
        monitor,
        prompt_ids=ids,
        prompt_aspects=aspects,
        model_specs=specs,
        catalog_file=catalog_file,
        quality=quality,
        cost=cost,
        env_applied=MappingProxyType(applied),
        workload=workload,
    )


def _monitor(c: Checker, doc: Mapping[str, object]) -> MonitorSpec | None:
    """``[monitor] interval_s``: 50 ms is as often as a sampling pass reliably takes."""
    raw = c.table(doc, "monitor", "monitor", ("interval_s",))
    if raw is None:
        return None
    interval = c.number("monitor.interval_s", raw.get("interval_s", 0.5), low=0.05, high=60.0)
    return None if interval is None else MonitorSpec(interval)


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
    flags = {k: raw.get(k, False) for k in ("foundry_local", "quickack")}
    for key, flag in flags.items():
        if not isinstance(flag, bool):
            c.expected(f"target.{key}", "true or false", flag)
    connections = raw.get("connections", "reuse")
    if connections not in ("reuse", "fresh"):
        c.expected("target.connections", "'reuse' or 'fresh'", connections)
    if flags["quickack"] is True and not sys.platform.startswith("linux"):
        c.add(f"target.quickack: TCP_QUICKACK exists on Linux only, not on {sys.platform}")
    foundry = flags["foundry_local"] is True
    if "base_url" in raw and "simulate" in raw:
        c.add("target: expected base_url or [target.simulate], not both")
    elif foundry and "simulate" in raw:
        c.add("target: expected foundry_local or [target.simulate], not both")
    elif "base_url" not in raw and "simulate" not in raw and not foundry and not _env_url(env):
        c.add("target: expected base_url or [target.simulate]")
    if "launch" in raw and "simulate" in raw:
        c.add("target: expected [target.simulate] or [target.launch], not both")
    elif "launch" in raw and "base_url" not in raw:
        c.add("target.launch: expected target.base_url too: the address the server listens on")
    var = _env_url(env)
    if var is not None:  # the target is elsewhere: nothing to simulate or launch
        from_foundry = var == "FOUNDRY_LOCAL_ENDPOINT"
        base_url, simulate = c.url(var, env[var], override=True, foundry=from_foundry), None
        launch = None
    metrics_url = c.url("target.metrics_url", raw["metrics_url"]) if "metrics_url" in raw else None
    if api is None or timeout is None or (base_url is None and simulate is None and not foundry):
        return None
    if connections not in ("reuse", "fresh") or not all(
        isinstance(f, bool) for f in flags.values()
    ):
        return None
    return Target(
        base_url,
        Api(api),
        key_env,
        timeout,
        simulate,
        metrics_url,
        launch,
        foundry_local=foundry,
        connections="fresh" if connections == "fresh" else "reuse",
        quickack=flags["quickack"] is True,
    )


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

    def model(key: str, entry: object) -> SimulatedModel | None:
        """``"name"`` or ``{name = "...", ttft_ms = 40, answer = "..."}``."""
        if isinstance(entry, str):
            name = c.string(key, entry)
            return None if name is None else SimulatedModel(name)
        if not isinstance(entry, dict) or "name" not in entry:
            c.expected(key, "a model name, or a table with a name", entry)
            return None
        known = [f.name for f in dataclasses.fields(SimulatedModel)]
        c.unknown_keys(key, entry, known)
        got: dict[str, object] = {}
        for field, value in entry.items():
            if field in ("name", "answer"):
                got[field] = c.string(f"{key}.{field}", value)
            elif field in ("ttft_ms", "itl_ms"):
                got[field] = c.number(f"{key}.{field}", value, low=0.0)
            elif field == "verdicts":
                items = c.each(f"{key}.verdicts", value, "strings") or [("", None)]
                verdicts = tuple(c.string(k, v) if k else None for k, v in items)
                got[field] = None if None in verdicts else verdicts
            elif field in known:  # the llama.cpp meta: n_params, size, n_ctx_train
                got[field] = c.integer(f"{key}.{field}", value, 0, INT64 - 1)
        if "answer" in got and "verdicts" in got:
            c.add(f"{key}: expected answer or verdicts, not both")
            return None
        ok = None not in got.values() and set(got) <= set(known)
        return SimulatedModel(**got) if ok else None  # type: ignore[arg-type]  # checked

    for name, value in raw.items():
        key = f"target.simulate.{name}"
        if name in ("models", "broken_models"):
            items = c.each(key, value, "models") or [("", None)]
            check = model if name == "models" else c.string
            got: list[SimulatedModel | str | None] = [check(k, v) if k else None for k, v in items]
            names = [m.name if isinstance(m, SimulatedModel) else m for m in got]
            twice = sorted({n for n in names if n is not None and names.count(n) > 1})
            if twice:
                c.add(f"{key}: expected each model once, got {', '.join(twice)} twice")
            values[name] = None if None in got or twice else tuple(got)
        elif name in ("slots", "max_tokens_default"):
            values[name] = c.integer(key, value, 1, MAX_CONCURRENCY)
        elif name == "seed":
            values[name] = c.integer(key, value, -INT64, INT64 - 1)
        elif name in _SIM_FAULTS or name in _SIM_SHARES:
            values[name] = c.number(key, value, low=0.0, high=1.0, want="a number from 0 to 1")
        elif name == "prefix_cache":
            values[name] = value if isinstance(value, bool) else None
            if not isinstance(value, bool):
                c.expected(key, "true or false", value)
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


def _prompts(c: Checker, doc: Mapping[str, object], folder: Path) -> tuple[PromptSet, str | None]:
    """Prompts with their ids and aspects (``read_models``), from the file or inline; none
    with a ``[workload]`` that leaves out ``[prompts]`` (the workload makes its own)."""
    if "prompts" not in doc and "workload" in doc:
        return ((), (), ()), None
    raw = c.table(doc, "prompts", "prompts", _PROMPT_KEYS)
    if raw is None:
        return ((), (), ()), None
    if ("items" in raw) == ("file" in raw):
        c.add("prompts: expected exactly one of items or file")
        return ((), (), ()), None
    if "file" in raw:
        name = c.string("prompts.file", raw["file"])
        return (((), (), ()), None) if name is None else (read_prompt_set(c, folder, name), name)
    return read_prompt_items(c, raw["items"]), None


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


def _extra(c: Checker, value: object, where: str = "request.extra") -> dict[str, object] | None:
    """Goes into the body as written, so it must be JSON: no dates, NaN or huge integers.

    Keys loadbench sets itself are refused: merged last, they would silently replace the
    model, the prompt or a setting that has its own key.
    """
    if not isinstance(value, dict):
        c.expected(where, "a table", value)
        return None
    before = len(c.problems)
    for name in value:
        if name in _SET_BY_LOADBENCH:
            own = f"request.{name}" if name in _REQUEST_KEYS else "[[models]] and [prompts]"
            c.add(f"{where}: key {name!r} is set by loadbench; use {own}")
    stack: list[tuple[str, object, int]] = [(where, value, 0)]
    while stack:  # iterative, and bounded in depth, so deep nesting stays a problem
        key, item, depth = stack.pop()
        if depth > MAX_EXTRA_DEPTH:
            c.expected(where, f"at most {MAX_EXTRA_DEPTH} levels of nesting", item)
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
