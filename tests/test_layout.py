"""The package's shape is part of the code: rooms along the pipeline, imports one way only.

Read from the source with ``ast`` (imports inside functions and ``TYPE_CHECKING`` blocks
count too: a cycle hidden in a function is still a cycle for the reader). See
docs/architecture.md for the picture these tests hold in place.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "loadbench"
# Top-level modules: shared vocabulary (errors .. thresholds) and the entry point.
SHARED = ("errors", "records", "metrics", "thresholds")
# Rooms from the bottom up: a room may import only rooms to its left (and SHARED).
ROOMS = (
    "scenario",
    "workload",
    "http",
    "models",
    "observe",
    "run",
    "results",
    "workers",
    "report",
    "sim",
    "cli",
)
MAX_LINES = 450  # "about 400 lines is the point to consider a split" (STYLE.md)


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, module imported from, name) for every loadbench import in the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "loadbench":
                    yield node.lineno, alias.name, None
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "loadbench"
        ):
            for alias in node.names:
                yield node.lineno, str(node.module), alias.name


def _edges(module: str) -> set[str]:
    """The loadbench modules that ``module`` needs loaded (a package's ``__init__`` too)."""
    out = set()
    for _, source, name in _imports(MODULES[module]):
        if name is not None and f"{source}.{name}" in MODULES:
            out.add(f"{source}.{name}")
        else:
            out.add(source)
    return out - {module}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "loadbench"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_room_is_known() -> None:
    rooms = {_room(m) for m in MODULES} - {"loadbench"}
    assert rooms == set(SHARED + ROOMS) | {"__main__"}


def test_no_module_import_cycle() -> None:
    graph = {m: _edges(m) & MODULES.keys() for m in MODULES}
    assert _cycles(graph) == []


def test_rooms_import_one_way() -> None:
    order = {room: i for i, room in enumerate((*SHARED, *ROOMS, "__main__"))}
    wrong = []
    for module in MODULES:
        here = _room(module)
        if here == "loadbench":
            continue
        for target in _edges(module):
            there = _room(target)
            if there not in ("loadbench", here) and order[there] > order[here]:
                wrong.append(f"{module} imports {target} ({here} may not import {there})")
    assert wrong == []


def test_other_rooms_are_reached_through_their_exports() -> None:
    """``from loadbench.run import plan_stages``, never ``loadbench.run.plan`` from outside."""
    wrong = []
    for module, path in MODULES.items():
        for line, source, _ in _imports(path):
            parts = source.split(".")
            if len(parts) > 2 and parts[1] in ROOMS and parts[1] != _room(module):
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line}: from {source}")
    assert wrong == []


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_states_its_job_and_exports(room: str) -> None:
    init = ROOT / room / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{init}: say the room's job in its docstring"
    names = [n for n in tree.body if isinstance(n, ast.Assign)]
    assert any(t.id == "__all__" for n in names for t in n.targets if isinstance(t, ast.Name))


def test_no_module_is_oversized() -> None:
    long = {
        str(p.relative_to(ROOT.parent)): n
        for p in MODULES.values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_a_planted_cycle_is_found() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
