"""The models one simulator serves: their names, timing, scripted text and ``/v1/models``.

By default the simulator is one model, ``sim-model``, that answers to any name, as
llama-server does. Given ``models``, it is a multi-model server (Ollama, Foundry Local): it
lists each, answers each with its own timing and words, and refuses a name it does not
list with 404, so a typo in a scenario shows in ``loadbench check``, not as a run of
errors. ``broken_models`` are listed but always fail, as a model whose weights do not load.

Scripted text makes the answers known in advance: ``answer`` is streamed word by word,
repeating up to ``max_tokens`` (so a heuristic quality score is fixed), and ``verdicts``
make a judge: the n-th request to it gets ``verdicts[n % len(verdicts)]``, whole, then
``finish_reason`` "stop" (so judge parsing is tested, unparseable verdicts included).

Kept apart from ``sim.faults`` (which re-exports ``SimModel``) because it is about which
model answers, not about how a response breaks; it imports nothing else of loadbench's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import orjson

MODEL_ID = "sim-model"
WORDS = ("the", "model", "streams", "tokens", "while", "bench", "measures", "latency")
# The SimConfig fields this module owns: flags of their own, not one ``--name VALUE`` each.
MODEL_FIELDS = ("models", "broken_models")
META_FIELDS = ("n_params", "size", "n_ctx_train")  # llama.cpp's /v1/models "meta" keys


@dataclass(frozen=True)
class SimModel:
    """One served model; timing left None is the server's ``ttft_ms`` and ``itl_ms``."""

    name: str
    ttft_ms: float | None = None
    itl_ms: float | None = None
    answer: str | None = None  # streamed word by word, repeating up to max_tokens
    verdicts: tuple[str, ...] = ()  # a judge: one verdict per request, cycled, then "stop"
    n_params: int | None = None  # listed in /v1/models "meta" when given, as llama.cpp does
    size: int | None = None  # bytes
    n_ctx_train: int | None = None


def as_model(entry: object) -> SimModel:
    """A ``SimModel`` from itself, a bare name, or a mapping of its fields.

    The mapping is what ``dataclasses.asdict`` makes of the scenario's ``SimulateSpec``,
    which the runner passes to ``SimConfig`` as it stands.
    """
    if isinstance(entry, SimModel):
        return entry
    if isinstance(entry, str):
        return SimModel(entry)
    if isinstance(entry, Mapping):
        values = dict(entry)
        if isinstance(values.get("verdicts"), list):
            values["verdicts"] = tuple(values["verdicts"])
        return SimModel(**values)
    raise TypeError(f"a simulated model is a SimModel, a name or a mapping, got {entry!r}")


def parse_model_arg(text: str) -> SimModel:
    """``--model``: ``NAME[:TTFT_MS:ITL_MS]``, or a JSON object of ``SimModel``'s fields.

    Names may hold colons (``phi-4:5``): the two timings are taken from the right only
    when both read as numbers. Raises ValueError with a message for the user.
    """
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--model: not valid JSON ({exc})") from None
        known = {f.name for f in fields(SimModel)}
        if not isinstance(data, dict) or "name" not in data or not set(data) <= known:
            raise ValueError(f"--model: expected a JSON object with keys from {sorted(known)}")
        return as_model(data)
    parts = text.rsplit(":", 2)
    if len(parts) == 3:
        try:
            ttft_ms, itl_ms = float(parts[1]), float(parts[2])
        except ValueError:
            pass
        else:
            return SimModel(parts[0], ttft_ms, itl_ms)
    return SimModel(text)


def model_args(models: Sequence[SimModel], broken_models: Sequence[str]) -> list[str]:
    """Flags that rebuild both fields in a child process: JSON, so every field survives."""
    args: list[str] = []
    for model in models:
        given = {f.name: getattr(model, f.name) for f in fields(SimModel)}
        given = {k: v for k, v in given.items() if v not in (None, ())}
        args += ["--model", json.dumps(given, separators=(",", ":"))]
    for name in broken_models:
        args += ["--broken-model", name]
    return args


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def model_problems(models: Sequence[object], broken_models: Sequence[object]) -> list[str]:
    """Every problem with the two fields, each keyed like ``models[1].itl_ms``."""
    problems: list[str] = []
    names: set[str] = set()
    for i, model in enumerate(models):
        key = f"models[{i}]"
        if not isinstance(model, SimModel):
            problems.append(f"{key}: expected a model, got {model!r}")
            continue
        if not isinstance(model.name, str) or not model.name.strip():
            problems.append(f"{key}.name: expected a non-empty string, got {model.name!r}")
        elif model.name in names:
            problems.append(f"{key}.name: {model.name!r} is listed twice")
        else:
            names.add(model.name)
        for name in ("ttft_ms", "itl_ms"):
            value = getattr(model, name)
            if value is not None and not (_number(value) and value >= 0):
                problems.append(f"{key}.{name}: expected a number >= 0, got {value!r}")
        for name in META_FIELDS:
            value = getattr(model, name)
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            if value is not None and not ok:
                problems.append(f"{key}.{name}: expected an integer >= 0, got {value!r}")
        if model.answer is not None and not (
            isinstance(model.answer, str) and model.answer.split()
        ):
            problems.append(f"{key}.answer: expected a string of words, got {model.answer!r}")
        verdicts = model.verdicts
        if not isinstance(verdicts, tuple) or not all(
            isinstance(v, str) and v.split() for v in verdicts
        ):
            problems.append(
                f"{key}.verdicts: expected a list of non-empty strings, got {verdicts!r}"
            )
        elif verdicts and model.answer is not None:
            problems.append(f"{key}: expected answer or verdicts, not both")
    for i, broken in enumerate(broken_models):
        if not isinstance(broken, str) or not broken.strip():
            problems.append(f"broken_models[{i}]: expected a non-empty string, got {broken!r}")
    return problems


def _words_json(words: Sequence[str]) -> tuple[bytes, ...]:
    return tuple(orjson.dumps(w + " ") for w in words)


_DEFAULT_WORDS_JSON = _words_json(WORDS)


@dataclass(slots=True)
class Served:
    """One model as the running server holds it: timing in seconds, words pre-encoded."""

    name: str
    ttft_s: float
    itl_s: float
    words: tuple[str, ...]
    words_json: tuple[bytes, ...]
    verdicts: tuple[tuple[str, ...], ...] = ()
    broken: bool = False
    requests: int = 0

    def script(self) -> tuple[tuple[str, ...], tuple[bytes, ...], bool]:
        """The next request's words, and whether they are a whole verdict (end at "stop")
        rather than words to cycle up to ``max_tokens``."""
        if not self.verdicts:
            return self.words, self.words_json, False
        words = self.verdicts[self.requests % len(self.verdicts)]
        self.requests += 1
        return words, _words_json(words), True


class Lineup:
    """The served models by name, and the ``/v1/models`` body listing them."""

    def __init__(
        self,
        models: Sequence[SimModel],
        broken_models: Sequence[str],
        *,
        ttft_ms: float,
        itl_ms: float,
    ) -> None:
        self.explicit = bool(models)  # only then is an unlisted name refused
        self.by_name: dict[str, Served] = {}
        for model in models or (SimModel(MODEL_ID),):
            words = tuple(model.answer.split()) if model.answer else WORDS
            self.by_name[model.name] = Served(
                model.name,
                (ttft_ms if model.ttft_ms is None else model.ttft_ms) / 1000.0,
                (itl_ms if model.itl_ms is None else model.itl_ms) / 1000.0,
                words,
                _words_json(words) if model.answer else _DEFAULT_WORDS_JSON,
                tuple(tuple(v.split()) for v in model.verdicts),
            )
        self.default = self.by_name[models[0].name if models else MODEL_ID]
        for name in broken_models:
            served = self.by_name.setdefault(
                name, Served(name, 0.0, 0.0, WORDS, _DEFAULT_WORDS_JSON)
            )
            served.broken = True
        listed = []
        meta = {m.name: {k: getattr(m, k) for k in META_FIELDS} for m in models}
        for name in self.by_name:
            entry: dict[str, object] = {"id": name, "object": "model", "owned_by": "loadbench"}
            given = {k: v for k, v in meta.get(name, {}).items() if v is not None}
            if given:
                entry["meta"] = given
            listed.append(entry)
        self.body = orjson.dumps({"object": "list", "data": listed})

    def find(self, name: str) -> Served | None:
        """None: not served (404). Without explicit models, any name is the default model."""
        served = self.by_name.get(name)
        if served is None and not self.explicit:
            return self.default
        return served
