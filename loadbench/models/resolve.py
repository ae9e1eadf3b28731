"""Model names as people type them, resolved to the ids a server lists.

Foundry Local lists ids such as ``qwen2.5-0.5b-instruct-generic-cpu:4`` while people (and
its workshop) say ``qwen2.5-0.5b``. The rules are the ones Foundry Local's own SDK applies
(../shared/research/foundry-local.md), so loadbench sends what the SDK would have sent:

1. an exact id, case-insensitively;
2. ``name:`` given without a version, or an id's name part (before ``:``) given whole: the
   highest version of that name;
3. an alias: the ids whose name part starts with the alias followed by ``-``. Among them
   the preferred device variant (NPU, then CUDA/GPU, then generic GPU, then CPU, generic
   CPU last) at its highest version. Candidates that differ in more than the variant and the
   version (``-instruct-`` and ``-coder-``) are ambiguous: an error that lists them.

Pure: a name and a list in, a ``Resolution`` out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from loadbench.errors import UsageError

# Most preferred first; the id's trailing device part is matched against these suffixes.
_DEVICE_ORDER = (
    ("npu",),
    ("cuda-gpu", "trt-rtx-gpu", "webgpu", "dml-gpu", "rocm-gpu"),
    ("generic-gpu", "gpu"),
    ("cpu",),
    ("generic-cpu",),
)
_VERSION = re.compile(r"^(?P<name>.*?)(?::(?P<version>[0-9]+))?$")


class AmbiguousModel(UsageError):
    """An alias that matches different models, not just variants of one."""


@dataclass(frozen=True)
class Resolution:
    asked: str
    served_as: str
    how: str  # "exact" | "version" | "alias" | "unlisted"

    @property
    def changed(self) -> bool:
        return self.served_as != self.asked

    def describe(self) -> str:
        """``qwen2.5-0.5b -> qwen2.5-0.5b-instruct-cuda-gpu:4`` for the console."""
        return f"{self.asked} -> {self.served_as}" if self.changed else self.asked


def _split(model_id: str) -> tuple[str, int]:
    m = _VERSION.match(model_id)
    assert m is not None  # the pattern matches any string
    version = m.group("version")
    return m.group("name"), int(version) if version is not None else -1


def _device_rank(name: str) -> tuple[int, str]:
    """(rank, device suffix); lower ranks are preferred. The longest known suffix decides,
    since ``generic-cpu`` also ends in ``-cpu``. An unknown device ranks last."""
    lowered = name.lower()
    found = [
        (len(suffix), rank, suffix)
        for rank, group in enumerate(_DEVICE_ORDER)
        for suffix in group
        if lowered.endswith("-" + suffix)
    ]
    if not found:
        return len(_DEVICE_ORDER), ""
    _, rank, suffix = max(found)
    return rank, suffix


def _model_part(name: str) -> str:
    """The name without its device variant: what two variants of one model share."""
    _, device = _device_rank(name)
    return name[: -len(device) - 1] if device else name


def resolve(asked: str, listed: Sequence[str]) -> Resolution:
    """The id to send for ``asked``; ``how == "unlisted"`` when nothing matches."""
    lowered = asked.lower()
    for model_id in listed:
        if model_id.lower() == lowered:
            return Resolution(asked, model_id, "exact")
    wanted_name = lowered[:-1] if lowered.endswith(":") else lowered
    same_name = [m for m in listed if _split(m)[0].lower() == wanted_name]
    if same_name:
        return Resolution(asked, max(same_name, key=lambda m: _split(m)[1]), "version")
    by_alias = [m for m in listed if _split(m)[0].lower().startswith(wanted_name + "-")]
    if not by_alias:
        return Resolution(asked, asked, "unlisted")
    models = {_model_part(_split(m)[0]).lower() for m in by_alias}
    if len(models) > 1:
        raise AmbiguousModel(
            f"model {asked!r} is ambiguous: the server lists {', '.join(sorted(by_alias))}; "
            "name one of them"
        )
    best = min(by_alias, key=lambda m: (_device_rank(_split(m)[0])[0], -_split(m)[1]))
    return Resolution(asked, best, "alias")
