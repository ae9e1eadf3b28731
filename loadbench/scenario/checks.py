"""The checks a scenario's values go through, and how each problem reads.

Kept apart from ``read`` because they know nothing of any section: each check takes
a key path and a value, returns the good value or adds one problem worded
``key.path: expected <what>, got <value>``, rather than raise. The command line's options go
through the same checks, with the option as the key (``--rate``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TypeGuard
from urllib.parse import urlsplit

from loadbench.errors import show

__all__ = ["Checker", "is_int", "show"]  # show lives in errors: thresholds use it too

_URL_WANT = "an http:// or https:// URL with a host"


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


class Checker:
    """Collects problems; each check returns the good value, or None after adding one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def expected(self, key: str, want: str, value: object) -> None:
        self.add(f"{key}: expected {want}, got {show(value)}")

    def unknown_keys(self, key: str, table: Mapping[str, object], known: Sequence[str]) -> None:
        for name in table:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.add(f"{key}: unknown key {show(name)}{hint}")

    def table(
        self, parent: Mapping[str, object], name: str, key: str, known: Sequence[str]
    ) -> dict[str, object] | None:
        """``parent[name]`` with its keys checked; ``{}`` when absent, None when not a table."""
        value = parent.get(name, {})
        if not isinstance(value, dict):
            self.expected(key, "a table", value)
            return None
        self.unknown_keys(key, value, known)
        return value

    def integer(self, key: str, value: object, low: int, high: int) -> int | None:
        if is_int(value) and low <= value <= high:
            return value
        want = {1: "a positive integer", 0: "an integer >= 0"}.get(low, "a 64-bit integer")
        if is_int(value) and value > high and low >= 0:
            want += f" up to {high}"
        self.expected(key, want, value)
        return None

    def number(
        self,
        key: str,
        value: object,
        *,
        positive: bool = False,
        low: float | None = None,
        high: float | None = None,
        want: str | None = None,
    ) -> float | None:
        """A finite int or float, never a bool, within the bounds given."""
        x = math.nan
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                x = float(value)
            except OverflowError:  # a TOML integer of 400 digits
                x = math.inf
        ok = math.isfinite(x) and (not positive or x > 0)
        ok = ok and (low is None or x >= low) and (high is None or x <= high)
        if ok:
            return x
        if want is None:
            want = "a positive number" if positive else f"a number >= {low:g}"
            if high is not None:
                want += f" up to {high:g}"
        self.expected(key, want, value)
        return None

    def string(self, key: str, value: object) -> str | None:
        if isinstance(value, str) and value.strip():
            return value
        self.expected(key, "a non-empty string", value)
        return None

    def choice(self, key: str, value: object, enum: type[StrEnum]) -> str | None:
        names = [str(m) for m in enum]
        if isinstance(value, str) and value in names:
            return value
        self.expected(key, "one of " + ", ".join(repr(n) for n in names), value)
        return None

    def each(self, key: str, value: object, what: str) -> list[tuple[str, object]] | None:
        """The items of a non-empty list, keyed ``key[i]``; a single value is a list of one."""
        if not isinstance(value, list):
            return [(key, value)]
        if not value:
            self.expected(key, f"a non-empty list of {what}", value)
            return None
        return [(f"{key}[{i}]", v) for i, v in enumerate(value)]

    def url(
        self, key: str, value: object, *, override: bool = False, foundry: bool = False
    ) -> str | None:
        """A base URL; an override is trimmed and gets ``/v1`` when it has no path.

        Credentials in the URL are refused and never echoed: the result file keeps the URL.
        """
        if not isinstance(value, str):
            self.expected(key, _URL_WANT, value)
            return None
        text = value.strip() if override else value
        try:
            parts = urlsplit(text)
            _ = parts.port  # raises on a port out of range
        except ValueError:
            self.expected(key, _URL_WANT, value)
            return None
        if parts.username is not None or parts.password is not None:
            self.add(f"{key}: expected {_URL_WANT} and no user:password, got one with them")
            return None
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or any(ch.isspace() for ch in text)
        ):
            self.expected(key, f"{_URL_WANT} (no query or fragment)", value)
            return None
        if override:
            text = text.rstrip("/")
            path = urlsplit(text).path
            if not path or (foundry and not path.endswith("/v1")):
                text += "/v1"
        return text
