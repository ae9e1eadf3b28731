"""The README is part of the code: it must name every command and the CI's test command."""

from __future__ import annotations

from pathlib import Path

from loadbench.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_command_is_in_the_readme() -> None:
    for name in main.commands:
        assert f"loadbench {name}" in README, name


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test\n" in ci
    assert "$ make test" in README
    assert "$ make demo" in README


def test_every_error_class_is_explained() -> None:
    from loadbench.records import ErrorKind

    for kind in ErrorKind:
        assert f"`{kind.value}`" in README, kind
