"""The models of one run: each resolved to the id its server lists, given a status, sampled
and scored, and written as the result document's ``models`` block.

Apart from ``runner`` (the run's three steps) because choosing a model is its own concern:
which target each model is on (its own ``base_url`` or the scenario's), what that server
lists (``GET /v1/models`` with the key), the name as typed against the id sent, and why a
model was skipped or failed. A model the server lists under no matching id is asked one
short question first: a server that answers any name with its one model (llama-server)
is not a reason to skip; a 404 is. Not the hot path: this runs before and between stages.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from loadbench.errors import TargetUnreachable, UsageError

# What a status means; "ok" is a model whose stages all ran.
OK, SKIPPED, FAILED = "ok", "skipped", "failed"
_PROBE = "Say hello in five words."
_LISTED_SHOWN = 8


@dataclass
class ModelRun:
    """One model's part of the run; the runner fills in its status as the run goes on."""

    name: str  # as typed
    served_as: str  # the id sent
    base_url: str
    api_key: str | None
    request: Any  # RequestSpec, with the entry's own extra merged over [request].extra
    inline: Mapping[str, object] = field(default_factory=dict)
    status: str = OK
    reason: str | None = None
    meta: dict[str, object] = field(default_factory=dict)
    samples: list[dict[str, Any]] | None = None
    quality: dict[str, Any] | None = None

    def fail(self, status: str, reason: str) -> None:
        if self.status == OK:
            self.status, self.reason = status, reason

    def block(self, stages: Sequence[Mapping[str, Any]], cost: Any) -> dict[str, Any]:
        """The contract's model block; ``stages`` are this model's stage dicts."""
        from loadbench.models import model_cost

        cost_block = None
        if cost is not None and stages:
            cost_block = model_cost(
                stages,
                price_per_kwh=cost.price_per_kwh,
                currency=cost.currency,
                device_watts=cost.device_watts,
            )
            if cost_block is not None and not cost_block["per_million_output_tokens"]:
                cost_block = None  # no stage produced a token: nothing to price
        return {
            "name": self.name,
            "served_as": self.served_as,
            "status": self.status,
            "reason": self.reason,
            "meta": self.meta,
            "samples": self.samples or [],
            "quality": self.quality,
            "cost": cost_block,
        }


def inline_meta(spec: Any) -> dict[str, object]:
    """A ``[[models]]`` entry's own size, licence and capabilities, those it sets."""
    meta = spec.meta
    out: dict[str, object] = {}
    if meta.size_mb is not None:
        out["size_mb"] = meta.size_mb
    if meta.license is not None:
        out["license"] = meta.license
    if meta.capabilities:
        out["capabilities"] = list(meta.capabilities)
    return out


def read_catalog_of(scenario: Any) -> dict[str, Any]:
    """The scenario's ``[models_catalog]`` file, read now so that a bad one is exit 2
    before anything starts."""
    if scenario.catalog_file is None:
        return {}
    from loadbench.models import read_catalog

    return read_catalog(Path(scenario.path).parent / scenario.catalog_file)


def with_capability(scenario: Any, catalog: Mapping[str, Any], capability: str) -> Any:
    """The scenario with only the models that have ``capability`` (inline or catalog)."""
    from loadbench.models import meta_for

    keep = [
        name
        for name in scenario.models
        if capability
        in (
            meta_for(name, name, catalog, inline_meta(scenario.model_spec(name)), {})[
                "capabilities"
            ]
            or []
        )  # type: ignore[operator]
    ]
    if not keep:
        raise UsageError(
            f"--capability {capability}: no model of the scenario has it "
            f"({', '.join(scenario.models)})"
        )
    return dataclasses.replace(scenario, models=tuple(keep))


def key_for(env_name: str | None, default: str | None, warnings: list[str]) -> str | None:
    if env_name is None:
        return default
    key = os.environ.get(env_name) or None
    if key is None:
        warnings.append(f"environment variable {env_name} is not set: no Authorization header")
    return key


def plan_lineup(
    scenario: Any, url: str, api_key: str | None, warnings: list[str]
) -> list[ModelRun]:
    """Each model on its target, before anything is asked of a server."""
    runs = []
    for name in scenario.models:
        spec = scenario.model_spec(name)
        request = scenario.request
        if spec.extra:
            merged = {**request.extra, **spec.extra}
            request = dataclasses.replace(request, extra=MappingProxyType(merged))
        runs.append(
            ModelRun(
                name=name,
                served_as=name,
                base_url=spec.base_url or url,
                api_key=key_for(spec.api_key_env, api_key, warnings),
                request=request,
                inline=inline_meta(spec),
            )
        )
    return runs


async def _listing(base_url: str, api_key: str | None, timeout_s: float) -> tuple[Any, bytes]:
    """``list_models`` with the key, and the raw body for the server's own model facts."""
    import httpx

    from loadbench import __version__
    from loadbench.models import list_models

    bodies: list[bytes] = []

    async def keep(response: httpx.Response) -> None:
        bodies.append(await response.aread())

    headers = {"user-agent": f"loadbench/{__version__}"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    async with httpx.AsyncClient(
        headers=headers,
        timeout=httpx.Timeout(min(timeout_s, 10.0)),
        trust_env=False,
        event_hooks={"response": [keep]},
        # No TLS over http://: skip loading the CA bundle (~60 ms before the first request).
        verify=not base_url.startswith("http://"),
    ) as client:
        listing = await list_models(client, base_url)
    return listing, (bodies[-1] if bodies else b"")


async def resolve_lineup(
    runs: Sequence[ModelRun],
    catalog: Mapping[str, Any],
    timeout_s: float,
    warnings: list[str],
    say: Any,
) -> None:
    """Ask each target for its models and resolve every name; sets ``served_as``, ``meta``
    and the skips. Raises ``AmbiguousModel`` (exit 2) before any load, and
    ``TargetUnreachable`` (exit 3) when no target answers at all."""
    from loadbench.models import collect_samples, meta_for, resolve, server_meta

    listings: dict[tuple[str, str | None], Any] = {}
    unreachable: dict[str, str] = {}
    for run in runs:
        target = (run.base_url, run.api_key)
        if target in listings or run.base_url in unreachable:
            continue
        try:
            listings[target] = await _listing(run.base_url, run.api_key, timeout_s)
        except TargetUnreachable as exc:
            unreachable[run.base_url] = str(exc)
    if not listings:
        raise TargetUnreachable(next(iter(unreachable.values())))
    for problem in {lst.problem for lst, _ in listings.values() if lst.problem}:
        warnings.append(f"{problem}: model names are sent as typed, unchecked")
        say(f"warning: {problem}: model names are sent as typed, unchecked", "yellow")
    for run in runs:
        if run.base_url in unreachable:
            run.fail(SKIPPED, unreachable[run.base_url])
            continue
        listing, body = listings[(run.base_url, run.api_key)]
        facts = server_meta(body)
        if listing.ids is not None:
            found = resolve(run.name, listing.ids)  # AmbiguousModel: exit 2
            run.served_as = found.served_as
            if found.changed:
                say(found.describe(), None)
            if found.how == "unlisted":
                shown = ", ".join(listing.ids[:_LISTED_SHOWN]) or "none"
                sample = await collect_samples(
                    run.base_url,
                    run.name,
                    [("check", _PROBE)],
                    max_tokens=4,
                    temperature=0,
                    extra=run.request.extra,
                    api_key=run.api_key,
                    timeout_s=timeout_s,
                )
                error = sample[0]["error"]
                if error:
                    why = error if len(error) <= 60 else error[:59] + "…"
                    run.fail(SKIPPED, f"not listed by {run.base_url} (it lists {shown}): {why}")
                else:
                    msg = (
                        f"the server does not list model(s) {run.name}; it lists {shown}; "
                        "it answers the name all the same, so it is sent as typed"
                    )
                    warnings.append(msg)
                    say(f"warning: {msg}", "yellow")
        run.meta = meta_for(run.name, run.served_as, catalog, run.inline, facts)


def samples_wanted(scenario: Any) -> bool:
    quality = scenario.quality
    if quality is not None and quality.samples is not None:
        return bool(quality.samples)
    return quality is not None or any(scenario.aspects)


async def sample_and_score(
    run: ModelRun,
    scenario: Any,
    default_url: str,
    default_key: str | None,
    judge_key: str | None,
) -> None:
    """Each prompt once at concurrency 1 (kept out of the stages' figures), then scored:
    heuristic where prompts have aspects, the judge where ``[quality]`` names one (the
    heuristic stands in for a verdict that does not parse), nothing with ``none``."""
    from loadbench.models import (
        collect_samples,
        combine_scores,
        heuristic_scores,
        judge_samples,
        model_quality,
    )

    request = run.request
    run.samples = await collect_samples(
        run.base_url,
        run.served_as,
        list(zip(scenario.ids, scenario.prompts, strict=True)),
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        extra=request.extra,
        api_key=run.api_key,
        timeout_s=scenario.target.timeout_s,
    )
    quality = scenario.quality
    method = "heuristic" if quality is None else quality.method
    if method == "none":
        return
    aspects = dict(zip(scenario.ids, scenario.aspects, strict=True))
    scores = heuristic_scores(run.samples, aspects)
    if method == "judge" and quality is not None and quality.judge_model is not None:
        judged = await judge_samples(
            quality.judge_base_url or default_url,
            quality.judge_model,
            run.samples,
            aspects,
            api_key=judge_key if quality.judge_api_key_env else default_key,
            timeout_s=scenario.target.timeout_s,
        )
        scores = combine_scores(judged, scores)
    run.quality = model_quality(scores)


def model_blocks(
    runs: Sequence[ModelRun], stages: Sequence[Mapping[str, Any]], cost: Any
) -> list[dict[str, Any]]:
    """The result document's ``models`` list, in the scenario's order."""
    return [run.block([s for s in stages if s["model"] == run.name], cost) for run in runs]


async def first_request(client: Any, model: str, prompt: str) -> Any:
    """A freshly started server's first request, counted in no stage."""
    return await client.execute(index=-1, warmup=True, model=model, prompt=prompt)


def cold_figures(cold: Mapping[str, Any], rec: Any) -> dict[str, Any]:
    """The first request's TTFT, and the cold start to first token as ready + that TTFT
    (as if sent the moment the server was ready, leaving out loadbench's own set-up)."""
    ttft = (rec.token_ns[0] - rec.sent_ns) / 1e9 if rec.ok and rec.token_ns else None
    return {
        "first_token_s": None if ttft is None else round(cold["ready_s"] + ttft, 3),
        "first_request_ttft_s": None if ttft is None else round(ttft, 3),
        "first_request": "ok" if rec.ok else str(rec.error),
    }


def status_after(run: ModelRun, stages: Sequence[Any]) -> None:
    """A model whose stage ended in a model failure is ``failed``, with the stage's why."""
    for s in stages:
        if s.stopped == "warmup_failed":
            why = "; ".join(f"{k}: {v[:160]}" for k, v in sorted(s.error_samples.items()))
            run.fail(
                FAILED,
                f"every warm-up request failed at {s.plan.label}" + (f" ({why})" if why else ""),
            )
        elif s.stopped == "max_error_rate":
            f = s.figures
            run.fail(
                FAILED,
                f"{s.plan.label}: {f.failed} of {f.sent} requests failed, over max_error_rate",
            )
