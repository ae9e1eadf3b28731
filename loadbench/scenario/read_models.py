"""The sections about choosing a model: ``[[models]]`` entries with their own target and
metadata, ``[models_catalog]``, prompt sets with ids and aspects, ``[quality]``, ``[cost]``,
and the Foundry Local workshop's ``BENCH_*`` environment variables.

Apart from ``read`` so that the general reader stays readable; the same rules hold: every
problem is collected as ``key.path: expected <what>, got <value>`` and nothing raises.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from loadbench.scenario.checks import Checker
from loadbench.scenario.model import (
    CostSpec,
    LoadSpec,
    ModelMeta,
    ModelSpec,
    QualitySpec,
    RequestSpec,
)
from loadbench.scenario.read_files import read_prompt_file, read_text
from loadbench.scenario.read_load import MAX_STAGE_REQUESTS

__all__ = [
    "BENCH_ENV",
    "PromptSet",
    "bench_env",
    "read_catalog",
    "read_cost",
    "read_model_entries",
    "read_prompt_items",
    "read_prompt_set",
    "read_quality",
]

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_META_KEYS = ("size_mb", "license", "capabilities")
_MODEL_KEYS = ("name", "base_url", "api_key_env", "extra", *_META_KEYS)
_QUALITY_KEYS = ("method", "judge_model", "judge_base_url", "judge_api_key_env", "samples")
_QUALITY_METHODS = ("heuristic", "judge", "none")
_COST_KEYS = ("device_watts", "price_per_kwh", "currency")
# Read in this order: a single prompt first, so that rounds count it alone.
BENCH_ENV = ("BENCH_MODELS", "BENCH_PROMPT", "BENCH_ROUNDS", "BENCH_STREAM")

PromptSet = tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]]
ExtraCheck = Callable[[Checker, object, str], "dict[str, object] | None"]


def _env_name(c: Checker, key: str, value: object) -> str | None:
    if isinstance(value, str) and _ENV_NAME_RE.fullmatch(value):
        return value
    if isinstance(value, str):  # perhaps the key itself: never print it
        c.add(
            f"{key}: expected the name of an environment variable, "
            "got something else (not shown: it may be a key)"
        )
    else:
        c.expected(key, "the name of an environment variable", value)
    return None


def _meta(c: Checker, key: str, raw: Mapping[str, object]) -> ModelMeta:
    size = raw.get("size_mb")
    size_mb = None if size is None else c.number(f"{key}.size_mb", size, low=0.0)
    license_ = raw.get("license")
    if license_ is not None and c.string(f"{key}.license", license_) is None:
        license_ = None
    caps: list[str] = []
    value = raw.get("capabilities", [])
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        caps = [str(v) for v in value]
    else:
        c.expected(f"{key}.capabilities", "a list of non-empty strings", value)
    return ModelMeta(size_mb, license_ if isinstance(license_, str) else None, tuple(caps))


def read_model_entries(
    c: Checker, doc: Mapping[str, object], extra_check: ExtraCheck
) -> tuple[ModelSpec, ...]:
    """``[[models]]`` (or ``models = ["a", "b"]``); ``extra_check`` is read's checker of
    ``[request].extra``, so that an entry's ``extra`` obeys the same rules."""
    want = "at least one [[models]] entry with a name"
    value = doc.get("models")
    if value is None:
        c.add(f"models: expected {want}")
        return ()
    if not isinstance(value, list) or not value:
        c.expected("models", want, value)
        return ()
    specs: list[ModelSpec] = []
    for i, entry in enumerate(value):
        key = f"models[{i}]"
        spec: ModelSpec | None = None
        if isinstance(entry, str):  # models = ["a", "b"] is read the same
            name = c.string(key, entry)
            spec = None if name is None else ModelSpec(name)
        elif isinstance(entry, dict):
            spec = _model_entry(c, key, entry, extra_check)
        else:
            c.expected(key, "a table with a name", entry)
        if spec is not None and any(s.name == spec.name for s in specs):
            c.expected(key, "each model once", spec.name)
        elif spec is not None:
            specs.append(spec)
    return tuple(specs)


def _model_entry(
    c: Checker, key: str, entry: Mapping[str, object], extra_check: ExtraCheck
) -> ModelSpec | None:
    c.unknown_keys(key, entry, _MODEL_KEYS)
    name: str | None = None
    if "name" in entry:
        name = c.string(f"{key}.name", entry["name"])
    else:
        c.add(f"{key}.name: expected a non-empty string, got nothing")
    base_url = c.url(f"{key}.base_url", entry["base_url"]) if "base_url" in entry else None
    key_env = (
        _env_name(c, f"{key}.api_key_env", entry["api_key_env"]) if "api_key_env" in entry else None
    )
    extra: dict[str, object] | None = {}
    if "extra" in entry:
        extra = extra_check(c, entry["extra"], f"{key}.extra")
    meta = _meta(c, key, entry)
    if name is None or extra is None:
        return None
    return ModelSpec(name, base_url, key_env, MappingProxyType(extra), meta)


def read_catalog(c: Checker, doc: Mapping[str, object]) -> str | None:
    """``[models_catalog] file``, relative to the scenario's folder. The file itself is
    read by ``loadbench.models.read_catalog`` when the run starts (its room owns the
    workshop's format); here only the key is checked."""
    raw = c.table(doc, "models_catalog", "models_catalog", ("file",))
    if raw is None or "file" not in raw:
        if raw is not None and raw == {} and "models_catalog" in doc:
            c.add("models_catalog.file: expected a file name, got nothing")
        return None
    return c.string("models_catalog.file", raw["file"])


def read_prompt_items(c: Checker, items: object) -> PromptSet:
    """``[prompts] items``: strings, or inline tables ``{id, prompt, aspects}``."""
    if not isinstance(items, list) or not items:
        c.expected("prompts.items", "a non-empty list of strings", items)
        return (), (), ()
    return _entries(c, [(f"prompts.items[{i}]", v) for i, v in enumerate(items)])


def read_prompt_set(c: Checker, folder: Path, name: str) -> PromptSet:
    """A prompt file (see ``read_files.read_prompt_file``, which checks its texts), whose
    object entries may also carry an ``id`` and ``aspects``."""
    before = len(c.problems)
    texts = read_prompt_file(c, folder, name)
    if len(c.problems) > before:
        return texts, (), ()
    text, _ = read_text(folder / name)
    if text.lstrip().startswith("["):
        raw: list[object] = list(json.loads(text))
    else:
        raw = [json.loads(line) for line in text.splitlines() if line.strip()]
    where = f"prompts.file: {name!r}"
    return _entries(c, [(f"{where} item {i}", v) for i, v in enumerate(raw)], strict=False)


def _entries(c: Checker, entries: list[tuple[str, object]], *, strict: bool = True) -> PromptSet:
    """``strict``: unknown keys are problems (inline items); a file's entries may carry
    other keys (datasets do), and a numeric ``id`` is read as its text."""
    prompts: list[str] = []
    ids: list[str] = []
    aspects: list[tuple[str, ...]] = []
    for i, (key, value) in enumerate(entries):
        if isinstance(value, dict):
            if strict:
                c.unknown_keys(key, value, ("id", "prompt", "aspects"))
            prompt = c.string(f"{key}.prompt", value.get("prompt"))
            pid = value.get("id", f"p{i + 1}")
            if not strict and isinstance(pid, int) and not isinstance(pid, bool):
                pid = str(pid)
            if not (isinstance(pid, str) and _ID_RE.fullmatch(pid)):
                c.expected(f"{key}.id", "up to 64 letters, digits, '.', '_', ':' or '-'", pid)
                pid = None
            found = value.get("aspects", [])
            if not (
                isinstance(found, list) and all(isinstance(a, str) and a.strip() for a in found)
            ):
                c.expected(f"{key}.aspects", "a list of non-empty strings", found)
                found = []
        else:
            prompt, pid, found = c.string(key, value), f"p{i + 1}", []
        if pid is not None and pid in ids:
            c.expected(f"{key}.id", "each prompt id once", pid)
        if prompt is not None and pid is not None:
            prompts.append(prompt)
            ids.append(pid)
            aspects.append(tuple(str(a) for a in found))
    return tuple(prompts), tuple(ids), tuple(aspects)


def read_quality(c: Checker, doc: Mapping[str, object]) -> QualitySpec | None:
    if "quality" not in doc:
        return None
    raw = c.table(doc, "quality", "quality", _QUALITY_KEYS)
    if raw is None:
        return None
    method = raw.get("method", "judge" if "judge_model" in raw else "heuristic")
    if method not in _QUALITY_METHODS:
        c.expected("quality.method", "one of 'heuristic', 'judge', 'none'", method)
        method = None
    judge = c.string("quality.judge_model", raw["judge_model"]) if "judge_model" in raw else None
    if method == "judge" and "judge_model" not in raw:
        c.add("quality.judge_model: expected the model that judges, got nothing")
    url = (
        c.url("quality.judge_base_url", raw["judge_base_url"]) if "judge_base_url" in raw else None
    )
    key_env = None
    if "judge_api_key_env" in raw:
        key_env = _env_name(c, "quality.judge_api_key_env", raw["judge_api_key_env"])
    samples = raw.get("samples")
    if samples is not None and not isinstance(samples, bool):
        c.expected("quality.samples", "true or false", samples)
        samples = None
    if method is None:
        return None
    return QualitySpec(str(method), judge, url, key_env, samples)


def read_cost(c: Checker, doc: Mapping[str, object]) -> CostSpec | None:
    if "cost" not in doc:
        return None
    raw = c.table(doc, "cost", "cost", _COST_KEYS)
    if raw is None:
        return None
    price = raw.get("price_per_kwh")
    watts = raw.get("device_watts")
    price_n = None if price is None else c.number("cost.price_per_kwh", price, low=0.0)
    watts_n = None if watts is None else c.number("cost.device_watts", watts, positive=True)
    if price is None:
        c.add("cost.price_per_kwh: expected a number >= 0, got nothing")
    currency = raw.get("currency", "EUR")
    if c.string("cost.currency", currency) is None:
        currency = "EUR"
    return CostSpec(price_n, watts_n, str(currency))


def bench_env(
    c: Checker,
    env: Mapping[str, str],
    models: tuple[ModelSpec, ...],
    prompts: PromptSet,
    request: RequestSpec | None,
    load: LoadSpec | None,
) -> tuple[tuple[ModelSpec, ...], PromptSet, RequestSpec | None, LoadSpec | None, dict[str, str]]:
    """The workshop's variables, where set and not blank, on top of the file:
    ``BENCH_MODELS`` (comma list) replaces the models (an entry of the file keeps its
    settings), ``BENCH_PROMPT`` is the one prompt, ``BENCH_ROUNDS`` makes each stage send
    every prompt that many times (requests = rounds × prompts), ``BENCH_STREAM`` is 0 or 1.
    Returns what was applied, for the result file."""
    applied = {k: env[k] for k in BENCH_ENV if env.get(k, "").strip()}
    if "BENCH_MODELS" in applied:
        names = [n.strip() for n in applied["BENCH_MODELS"].split(",") if n.strip()]
        if names and len(set(names)) == len(names):
            by_name = {m.name: m for m in models}
            models = tuple(by_name.get(n, ModelSpec(n)) for n in names)
        else:
            c.expected(
                "BENCH_MODELS", "a comma-separated list of distinct names", applied["BENCH_MODELS"]
            )
    if "BENCH_PROMPT" in applied:
        prompts = ((applied["BENCH_PROMPT"],), ("p1",), ((),))
    if "BENCH_STREAM" in applied and request is not None:
        flag = applied["BENCH_STREAM"].strip()
        if flag in ("0", "1"):
            request = dataclasses.replace(request, stream=flag == "1")
        else:
            c.expected("BENCH_STREAM", "0 or 1", applied["BENCH_STREAM"])
    if "BENCH_ROUNDS" in applied and load is not None:
        text = applied["BENCH_ROUNDS"].strip()
        rounds = int(text) if text.isdigit() else 0
        count = rounds * max(len(prompts[0]), 1)
        if rounds < 1 or count > MAX_STAGE_REQUESTS:
            c.expected("BENCH_ROUNDS", "a positive integer", applied["BENCH_ROUNDS"])
        else:
            load = dataclasses.replace(load, requests=count, duration_s=None)
    return models, prompts, request, load, applied
