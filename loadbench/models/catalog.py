"""What a model is, beside how fast it answers: the catalog file, the scenario, the server.

A comparison of models needs their size, licence and capabilities next to the latency,
and three places know some of it. The catalog (``models.json``, the workshop's shape:
``{"alias": {"capabilities": [...], "size_mb": N, "license": "..."}}``) is the shared,
approximate record; the scenario's ``[[models]]`` keys are the user's word for this run;
the server knows what it actually loaded (llama.cpp lists ``meta`` in ``/v1/models``).
``meta_for`` merges them, the scenario over the server over the catalog, so a user can
correct either, and names in ``sources`` where each field came from, so a reader knows
which figures were measured and which were typed in.

Pure: ``read_catalog`` reads one file, the rest take values. Sizes are decimal megabytes
(10^6 bytes), as model cards and download pages state them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from loadbench.errors import UsageError, show

__all__ = ["CatalogEntry", "CatalogError", "meta_for", "read_catalog", "server_meta"]

_INTS = ("parameters", "context")
_KEYS = ("capabilities", "size_mb", "license", *_INTS)
_FIELDS = ("size_mb", "license", "capabilities", *_INTS)  # the order of the "meta" block


class CatalogError(UsageError):
    """Every problem in one catalog file, each as ``file: alias.field: expected ...``."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


@dataclass(frozen=True)
class CatalogEntry:
    capabilities: tuple[str, ...] = ()
    size_mb: float | None = None
    license: str | None = None
    parameters: int | None = None
    context: int | None = None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(alias: str, raw: object, problems: list[str]) -> CatalogEntry | None:
    if not isinstance(raw, dict):
        problems.append(f"{alias}: expected an object of model facts, got {show(raw)}")
        return None
    before = len(problems)
    values: dict[str, object] = {}
    for key, value in raw.items():
        where = f"{alias}.{key}"
        if key == "capabilities":
            if not isinstance(value, list) or not all(
                isinstance(v, str) and v.strip() for v in value
            ):
                problems.append(f"{where}: expected a list of strings, got {show(value)}")
            else:
                values[key] = tuple(value)
        elif key == "size_mb":
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and value >= 0):
                problems.append(f"{where}: expected a number >= 0, got {show(value)}")
            else:
                values[key] = float(value)
        elif key == "license":
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{where}: expected a non-empty string, got {show(value)}")
            else:
                values[key] = value
        elif key in _INTS:
            if not (_is_int(value) and value > 0):
                problems.append(f"{where}: expected a positive integer, got {show(value)}")
            else:
                values[key] = value
        else:
            problems.append(f"{where}: unknown key (expected one of {', '.join(_KEYS)})")
    if len(problems) > before:
        return None
    return CatalogEntry(**values)  # type: ignore[arg-type]  # each value checked above


def read_catalog(path: Path) -> dict[str, CatalogEntry]:
    """The file's entries by alias; keys starting with ``_`` (``"_comment"``) are notes.

    Raises ``CatalogError`` (exit 2) listing every problem in the file at once.
    """
    shown = str(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(shown, [f"cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise CatalogError(shown, ["expected UTF-8 text"]) from None
    except json.JSONDecodeError as exc:
        raise CatalogError(shown, [f"invalid JSON: {exc}"]) from None
    if not isinstance(raw, dict):
        raise CatalogError(shown, [f"expected an object of model aliases, got {show(raw)}"])
    problems: list[str] = []
    entries: dict[str, CatalogEntry] = {}
    for alias, value in raw.items():
        if alias.startswith("_"):
            continue
        entry = _entry(alias, value, problems)
        if entry is not None:
            entries[alias] = entry
    if problems:
        raise CatalogError(shown, problems)
    return entries


def server_meta(listing: object) -> dict[str, dict[str, int | float]]:
    """What a ``/v1/models`` body says of each model id, in the "meta" block's names.

    llama.cpp's ``meta``: ``n_params`` becomes parameters, ``size`` (bytes) size_mb,
    ``n_ctx_train`` context. Takes the body as bytes, text or parsed JSON; anything else
    or malformed gives nothing, as a server that lists no meta does.
    """
    if isinstance(listing, bytes | str):
        try:
            listing = json.loads(listing)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
    data = listing.get("data") if isinstance(listing, dict) else None
    found: dict[str, dict[str, int | float]] = {}
    for model in data if isinstance(data, list) else ():
        if not isinstance(model, dict) or not isinstance(model.get("id"), str):
            continue
        meta = model.get("meta")
        if not isinstance(meta, dict):
            continue
        facts: dict[str, int | float] = {}
        for key, name in (("n_params", "parameters"), ("n_ctx_train", "context")):
            if _is_int(meta.get(key)) and meta[key] > 0:
                facts[name] = meta[key]
        if _is_int(meta.get("size")) and meta["size"] > 0:
            facts["size_mb"] = round(meta["size"] / 1e6, 1)
        if facts:
            found[model["id"]] = facts
    return found


def _lookup(catalog: Mapping[str, CatalogEntry], *names: str) -> CatalogEntry | None:
    """The typed name first, then the served id; exact, then ignoring case."""
    for name in names:
        if name in catalog:
            return catalog[name]
    folded = {alias.casefold(): entry for alias, entry in catalog.items()}
    for name in names:
        if name.casefold() in folded:
            return folded[name.casefold()]
    return None


def meta_for(
    name: str,
    served_as: str,
    catalog: Mapping[str, CatalogEntry],
    inline: Mapping[str, object],
    server: Mapping[str, Mapping[str, object]],
) -> dict[str, object]:
    """The contract's "meta" block for one model.

    ``inline``: the scenario's keys for it (size_mb, license, capabilities; others are
    ignored); ``server``: ``server_meta`` of the listing, looked up by ``served_as``. A
    field no source gives is null (capabilities: empty) and has no entry in ``sources``.
    """
    entry = _lookup(catalog, name, served_as)
    layers: list[tuple[str, Mapping[str, object]]] = [
        ("scenario", inline),
        ("server", server.get(served_as, {})),
    ]
    if entry is not None:
        facts = {k: getattr(entry, k) for k in _FIELDS}
        layers.append(("catalog", {k: v for k, v in facts.items() if v not in (None, ())}))
    meta: dict[str, object] = {}
    sources: dict[str, str] = {}
    for field in _FIELDS:
        meta[field] = [] if field == "capabilities" else None
        for source, values in layers:
            value = values.get(field)
            if isinstance(value, list | tuple):
                value = list(value) or None
            if value is not None:
                meta[field] = value
                sources[field] = source
                break
    meta["sources"] = sources
    return meta
