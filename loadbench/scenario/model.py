"""The scenario: everything a run needs, decided before any connection, as frozen data.

The target (a URL, a server loadbench launches, or the built-in simulator), the models, the
prompts, the request body and the load shape. ``load_scenario`` reads one TOML file into a
``Scenario`` (``read``) and ``apply_overrides`` lays the command line on top (``overrides``);
both raise only ``ScenarioError``, listing every problem at once. This module holds the data
model alone and imports neither of them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

from loadbench.scenario.workload_model import WorkloadSpec
from loadbench.thresholds import Threshold

__all__ = [
    "BASE_URL_ENV",
    "Api",
    "Arrival",
    "CostSpec",
    "LaunchSpec",
    "LoadMode",
    "LoadSpec",
    "ModelMeta",
    "ModelSpec",
    "MonitorSpec",
    "QualitySpec",
    "RequestSpec",
    "Scenario",
    "SearchSpec",
    "SimulateSpec",
    "Target",
    "redact_argv",
]


class Api(StrEnum):
    CHAT = "chat"  # POST {base_url}/chat/completions
    COMPLETIONS = "completions"  # POST {base_url}/completions


class LoadMode(StrEnum):
    CONCURRENCY = "concurrency"  # closed loop: N workers, each sends when its last one ends
    RATE = "rate"  # open loop: arrivals on a schedule, whatever the server does


class Arrival(StrEnum):
    CONSTANT = "constant"
    POISSON = "poisson"
    GAMMA = "gamma"


@dataclass(frozen=True)
class SimulatedModel:
    """One model the simulator serves; the field names are ``sim.served.SimModel``'s."""

    name: str
    ttft_ms: float | None = None  # None: the simulator's own
    itl_ms: float | None = None
    answer: str | None = None  # words streamed in order, repeating
    verdicts: tuple[str, ...] = ()  # a judge: one verdict per request, cycled
    n_params: int | None = None  # llama.cpp's /v1/models "meta"
    size: int | None = None  # bytes
    n_ctx_train: int | None = None


@dataclass(frozen=True)
class SimulateSpec:
    """The built-in simulator's settings; the field names are ``SimConfig``'s."""

    ttft_ms: float = 80.0
    itl_ms: float = 15.0
    slots: int = 8
    jitter: float = 0.0
    batch_itl_factor: float = 0.08
    max_tokens_default: int = 128
    seed: int | None = None
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    stall_rate: float = 0.0
    unavailable_rate: float = 0.0
    unauthorized_rate: float = 0.0
    reset_rate: float = 0.0
    silent_rate: float = 0.0
    not_sse_rate: float = 0.0
    empty_rate: float = 0.0
    no_done_rate: float = 0.0
    bad_json_rate: float = 0.0
    stall_s: float = 30.0
    # Workload realism (all off by default, so the timing tests' truth stays exact):
    prefill_ms_per_token: float = 0.0  # added to TTFT per uncached prompt token
    early_stop_rate: float = 0.0  # share of answers that end before max_tokens ("stop")
    prefix_cache: bool = False  # cached prompt prefixes skip their prefill time
    models: tuple[SimulatedModel, ...] = ()  # none: one "sim-model" that answers any name
    broken_models: tuple[str, ...] = ()


@dataclass(frozen=True)
class LaunchSpec:
    """A server that loadbench starts, waits for and stops itself ([target.launch]).

    Owning the process is what makes a cold start measurable: from spawn to ready, and to
    the first token. The command is an argument list, never a shell line, so it means the
    same on Windows, macOS and Linux.
    """

    command: tuple[str, ...]
    ready_url: str | None = None  # answers 200 once ready; default: <base without /v1>/health
    ready_timeout_s: float = 300.0


@dataclass(frozen=True)
class Target:
    base_url: str | None  # None only with ``simulate`` (its own URL) or ``foundry_local``
    api: Api
    api_key_env: str | None  # the variable's name; the key is read from the environment
    timeout_s: float
    simulate: SimulateSpec | None
    metrics_url: str | None = None  # Prometheus text; default: <base>/metrics when it answers
    launch: LaunchSpec | None = None
    foundry_local: bool = False  # no base_url: `foundry service status` says it at run time
    # "fresh": a new connection per request (its connect apart); "reuse": kept alive, as SDKs
    connections: Literal["reuse", "fresh"] = "reuse"
    quickack: bool = False  # Linux: TCP_QUICKACK after each read and write (http.transport)


@dataclass(frozen=True)
class RequestSpec:
    max_tokens: int
    temperature: float | None  # None: left out of the body, the server's default applies
    stream: bool
    extra: Mapping[str, object]  # read-only; merged into the body last, as written


@dataclass(frozen=True)
class SearchSpec:
    """``[load] search``: the highest load whose stage meets every ``[slo]`` limit, found by
    bisection over real stages between ``low`` and ``high`` until the bracket is no wider
    than ``precision``."""

    over: LoadMode
    low: float
    high: float
    precision: float


@dataclass(frozen=True)
class LoadSpec:
    mode: LoadMode
    concurrency: tuple[int, ...]  # one stage per value when mode is CONCURRENCY, else ()
    rate: tuple[float, ...]  # requests/s, one stage per value when mode is RATE, else ()
    arrival: Arrival
    burstiness: float  # gamma shape: 1 is Poisson, below 1 burstier, above 1 steadier
    max_concurrency: int | None  # open loop: cap on requests in flight
    requests: int | None  # measured requests per stage; exactly one of this and duration_s
    duration_s: float | None
    warmup: int  # requests per stage sent first and left out of every figure
    seed: int
    max_error_rate: float | None = None  # stop a stage early once more than this fails
    max_duration_s: float | None = None  # stop the whole run after this long
    workers: int | str | None = None  # processes per stage ("auto": one per core); None: 1
    ramp_s: float | None = None  # load rises linearly over this long; left out of figures
    search: SearchSpec | None = None  # replaces the concurrency or rate list when given


@dataclass(frozen=True)
class MonitorSpec:
    """How often the server, the machine and its GPUs are sampled during a stage."""

    interval_s: float = 0.5


@dataclass(frozen=True)
class ModelMeta:
    """What a person declares about a model (``[[models]]`` keys or the catalog file)."""

    size_mb: float | None = None
    license: str | None = None
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """One ``[[models]]`` entry. Its own ``base_url`` and ``api_key_env`` aim it at another
    server than ``[target]`` (one model on two engines in one run); ``extra`` is merged over
    ``[request].extra`` for its requests only."""

    name: str
    base_url: str | None = None
    api_key_env: str | None = None
    extra: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    meta: ModelMeta = ModelMeta()


@dataclass(frozen=True)
class QualitySpec:
    """``[quality]``: how sample answers are scored. ``samples`` None: on when the prompts
    have aspects or a ``[quality]`` section is given."""

    method: str = "heuristic"  # "heuristic" | "judge" | "none"
    judge_model: str | None = None
    judge_base_url: str | None = None  # default: the model's own target
    judge_api_key_env: str | None = None
    samples: bool | None = None


@dataclass(frozen=True)
class CostSpec:
    """``[cost]``: the declared power and price; measured energy wins where it exists."""

    price_per_kwh: float | None = None
    device_watts: float | None = None
    currency: str = "EUR"


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    target: Target
    models: tuple[str, ...]
    prompts: tuple[str, ...]
    prompts_file: str | None  # as written in the file, relative to its folder
    request: RequestSpec
    load: LoadSpec
    slo: tuple[Threshold, ...] = ()  # from [slo]: every stage is judged against these
    monitor: MonitorSpec = MonitorSpec()
    # Parallel to ``prompts``: ids ("p1", ... unless named) and the aspects a good answer
    # covers. Empty when a Scenario is built by hand: see ``ids`` and ``aspects``.
    prompt_ids: tuple[str, ...] = ()
    prompt_aspects: tuple[tuple[str, ...], ...] = ()
    model_specs: tuple[ModelSpec, ...] = ()  # the [[models]] entries as written
    catalog_file: str | None = None  # as written, relative to the scenario's folder
    quality: QualitySpec | None = None
    cost: CostSpec | None = None
    env_applied: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    workload: WorkloadSpec | None = None  # [workload]: token lengths, datasets, traces

    @property
    def ids(self) -> tuple[str, ...]:
        """Each prompt's id, ``p1``, ``p2``, ... where the file named none."""
        if len(self.prompt_ids) == len(self.prompts):
            return self.prompt_ids
        return tuple(f"p{i + 1}" for i in range(len(self.prompts)))

    @property
    def aspects(self) -> tuple[tuple[str, ...], ...]:
        if len(self.prompt_aspects) == len(self.prompts):
            return self.prompt_aspects
        return tuple(() for _ in self.prompts)

    def model_spec(self, name: str) -> ModelSpec:
        """The entry for ``name``; a bare one for a model named only on the command line."""
        return next((m for m in self.model_specs if m.name == name), ModelSpec(name))

    def to_dict(self) -> dict[str, object]:
        """The resolved scenario for the result file: plain JSON types, no secrets."""
        t, r, ld = self.target, self.request, self.load
        base: dict[str, object] = {
            "name": self.name,
            "path": self.path,
            "target": {
                "base_url": t.base_url,
                "api": str(t.api),
                "api_key_env": t.api_key_env,
                "timeout_s": t.timeout_s,
                "simulate": None if t.simulate is None else dataclasses.asdict(t.simulate),
                "metrics_url": t.metrics_url,
                "launch": None
                if t.launch is None
                else {
                    "command": list(redact_argv(t.launch.command)),
                    "ready_url": t.launch.ready_url,
                    "ready_timeout_s": t.launch.ready_timeout_s,
                },
                # Chosen away from the defaults only, so other results stay as they were.
                **({"foundry_local": True} if t.foundry_local else {}),
                **({"connections": t.connections} if t.connections != "reuse" else {}),
                **({"quickack": True} if t.quickack else {}),
            },
            "models": list(self.models),
            "prompts": list(self.prompts),
            "prompts_file": self.prompts_file,
            "request": {
                "max_tokens": r.max_tokens,
                "temperature": r.temperature,
                "stream": r.stream,
                "extra": _plain(r.extra),
            },
            "load": {
                "mode": str(ld.mode),
                "concurrency": list(ld.concurrency),
                "rate": list(ld.rate),
                "arrival": str(ld.arrival),
                "burstiness": ld.burstiness,
                "max_concurrency": ld.max_concurrency,
                "requests": ld.requests,
                "duration_s": ld.duration_s,
                "warmup": ld.warmup,
                "seed": ld.seed,
                "max_error_rate": ld.max_error_rate,
                "max_duration_s": ld.max_duration_s,
                **({"workers": ld.workers} if ld.workers is not None else {}),
                **({"ramp_s": ld.ramp_s} if ld.ramp_s is not None else {}),
                # [load] search, which replays from the result file into summary.search
                **({"search": dataclasses.asdict(ld.search)} if ld.search is not None else {}),
            },
            "slo": [t.source for t in self.slo],
            "monitor": {"interval_s": self.monitor.interval_s},
        }
        return base | self._choice_dict()

    def _choice_dict(self) -> dict[str, object]:
        """The model-choice settings, each only where the file set it, so that a scenario
        without them resolves to the same dict as before they existed."""
        out: dict[str, object] = {}
        if self.workload is not None:
            out["workload"] = self.workload.to_dict()
        if any(self.aspects):
            out["prompt_ids"] = list(self.ids)
            out["prompt_aspects"] = [list(a) for a in self.aspects]
        targets = {
            m.name: {"base_url": m.base_url, "api_key_env": m.api_key_env, "extra": _plain(m.extra)}
            for m in self.model_specs
            if m.base_url is not None or m.api_key_env is not None or m.extra
        }
        if targets:
            out["model_targets"] = targets
        if self.catalog_file is not None:
            out["models_catalog"] = self.catalog_file
        if self.quality is not None:
            out["quality"] = dataclasses.asdict(self.quality)
        if self.cost is not None:
            out["cost"] = dataclasses.asdict(self.cost)
        if self.env_applied:
            out["env_applied"] = dict(self.env_applied)
        return out


# Checked in this order; the first one set (not blank) wins. Foundry Local prints its
# endpoint without the /v1 that its OpenAI-compatible routes live under.
BASE_URL_ENV = ("LOADBENCH_BASE_URL", "OPENAI_BASE_URL", "FOUNDRY_LOCAL_ENDPOINT")


_SECRET_FLAG = re.compile(r"(key|token|secret|passw|auth)", re.IGNORECASE)


def redact_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """The command as the result file and messages show it: the value after any option
    that names a key, token, secret or password (``--api-key X``, ``--api-key=X``) hidden,
    because llama-server and vLLM take their API key on the command line."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
        elif arg.startswith("-") and _SECRET_FLAG.search(arg.split("=", 1)[0]):
            if "=" in arg:
                out.append(arg.split("=", 1)[0] + "=***")
            else:
                out.append(arg)
                hide_next = True
        else:
            out.append(arg)
    return tuple(out)


def _plain(value: object) -> object:
    """A deep copy in plain dicts and lists (``extra`` is read-only, and nests at most 32)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
