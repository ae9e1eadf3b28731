"""The README and docs/ are part of the code: they must name every command, the CI's test
command and every error class, their links must lead somewhere, and the code they name
must exist. The README is the front door, so it stays short and links every page of docs/.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from loadbench.cli import main

ROOT = Path(__file__).resolve().parent.parent
README_PATH = ROOT / "README.md"
README = README_PATH.read_text(encoding="utf-8")
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README_PATH, *DOCS]
README_MAX_LINES = 260

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose(text: str) -> str:
    """The text with fenced blocks blanked: a `# comment` in a shell block is no heading."""
    return _FENCE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """Every heading's anchor in the file, with GitHub's -1, -2 for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_prose(path.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(path: Path) -> list[str]:
    text = _CODE_SPAN.sub(lambda m: "x" * len(m.group(0)), _prose(path.read_text("utf-8")))
    # A code span inside a link's text (`[`x`](y)`) is blanked to x's, so the link survives.
    return _LINK.findall(text)


def _relative_links(path: Path) -> list[str]:
    return [t for t in _links(path) if not _SCHEME.match(t)]


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

    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    for kind in ErrorKind:
        assert f"`{kind.value}`" in text, kind


def test_the_readme_is_a_front_door() -> None:
    lines = README.count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move detail into docs/"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    assert DOCS, "docs/ holds no pages"
    linked = {
        (README_PATH.parent / t.split("#")[0]).resolve() for t in _relative_links(README_PATH)
    }
    for page in DOCS:
        assert page.resolve() in linked, f"README.md does not link docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    problems = []
    for target in _relative_links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            problems.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_the_slugs_are_githubs() -> None:
    assert _slug("A real engine: llama.cpp") == "a-real-engine-llamacpp"
    assert _slug("Scaling, SLOs, reports and CI gates") == "scaling-slos-reports-and-ci-gates"
    assert _slug("The simulator on its own: `loadbench simulate`") == (
        "the-simulator-on-its-own-loadbench-simulate"
    )


# Code named in backticks, e.g. `loadbench/http/client.py` or `loadbench.report.CSV_COLUMNS`:
# after a move, a stale name in the docs is a broken promise, so it fails here.
_PATH_NAMED = re.compile(r"`(loadbench/[\w/.-]+\.(?:py|json))`")
_DOTTED_NAMED = re.compile(r"`(loadbench(?:\.\w+)+)`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_code_the_docs_name_exists(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for name in _PATH_NAMED.findall(text):
        assert (ROOT / name).exists(), f"{page.name} names {name}, which is not there"
    for dotted in _DOTTED_NAMED.findall(text):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj: object = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attr in parts[cut:]:
                assert hasattr(obj, attr), f"{page.name} names {dotted}, which is not there"
                obj = getattr(obj, attr)
            break


def test_the_architecture_names_every_module() -> None:
    """docs/architecture.md's rooms table is the map; a module missing from it is uncharted."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "loadbench").glob("*/*.py")):
        if not path.stem.startswith("_"):  # __init__, and private helpers
            room = path.parent.name
            row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{room}/` |")), "")
            assert f"`{path.stem}`" in row, f"docs/architecture.md: name {room}/{path.name}"
