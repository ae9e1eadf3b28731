"""The one error hierarchy: everything loadbench raises on purpose.

    LoadbenchError                 exit 1, the generic failure
     ├── UsageError                exit 2, bad input: a file, an option, a field
     │    ├── ScenarioError        every problem found in one scenario file
     │    └── ResultFileError      a result file that cannot be read
     └── TargetUnreachable         exit 3, no answer from the target before the first stage

Only the CLI catches these; it prints ``Error: <message>`` and exits with ``exit_code``.
Server failures during a run are *not* errors: they are counted on the records. ``show``
renders a bad value for a message, the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time


class LoadbenchError(Exception):
    exit_code = 1

    @property
    def message(self) -> str:
        return str(self)


class UsageError(LoadbenchError):
    exit_code = 2


class ScenarioError(UsageError):
    """Carries every problem at once, so a user fixes a file in one pass."""

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        lines = [f"{path}: {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class ResultFileError(UsageError):
    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class TargetUnreachable(LoadbenchError):
    exit_code = 3


def show(value: object) -> str:
    """A value about as the user wrote it, and never very long."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime | date | time):
        text = value.isoformat()
    else:
        try:
            text = repr(value)
        except ValueError:  # an int past the 4300-digit conversion limit
            text = "a very long integer"
    return text if len(text) <= 60 else text[:57] + "..."
