"""Bad input everywhere: only LoadbenchError may come out, and the CLI says it in one line."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadbench.cli import main
from loadbench.errors import LoadbenchError
from loadbench.report.document import csv_text, markdown
from loadbench.results.analysis import summarize_run
from loadbench.results.compare import compare
from loadbench.results.file import load_result
from loadbench.results.merge import merge_results
from tests.test_analysis import make_doc, make_stage

VALID = make_doc([make_stage(concurrency=1, ttft=[50.0] * 20), make_stage(concurrency=4)])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def mutate(doc: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """Replace one value somewhere in the document with an arbitrary JSON value."""
    doc = copy.deepcopy(doc)
    node: Any = doc
    for _ in range(data.draw(st.integers(0, 5))):
        if isinstance(node, dict) and node:
            key = data.draw(st.sampled_from(sorted(node)))
            if not isinstance(node[key], dict | list) or data.draw(st.booleans()):
                node[key] = data.draw(json_values)
                return doc
            node = node[key]
        elif isinstance(node, list) and node:
            node = node[data.draw(st.integers(0, len(node) - 1))]
        else:
            break
    if isinstance(node, dict):
        node[data.draw(st.text(max_size=6))] = data.draw(json_values)
    return doc


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_mutated_result_files_raise_only_loadbench_errors(
    tmp_path: Path, data: st.DataObject
) -> None:
    """Any document that passes the file edge must be safe for every command after it."""
    path = tmp_path / "bad.json"
    path.write_bytes(orjson.dumps(mutate(VALID, data)))
    try:
        bad = load_result(path)
    except LoadbenchError:
        return
    markdown([("x", {**bad, "summary": summarize_run(bad)})])
    csv_text([("x", {**bad, "summary": summarize_run(bad)})])
    with contextlib.suppress(LoadbenchError):  # e.g. stages that cannot be matched
        compare(VALID, bad)
    with contextlib.suppress(LoadbenchError):
        merge_results([VALID, bad], ["a.json", "b.json"])


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(max_size=200))
def test_arbitrary_bytes_as_a_result_file(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(blob)
    with contextlib.suppress(LoadbenchError):
        load_result(path)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p, "Is a directory"),
        (lambda p: p / "missing.toml", "No such file"),
        (lambda p: write(p / "empty.toml", b""), "models"),
        (
            lambda p: write(p / "bin.toml", b"\x00\xff\xfe\x80"),
            "expected UTF-8 text, got byte 0xff",
        ),
    ],
)
def test_run_with_a_bad_scenario_path_exits_2_in_one_line(
    tmp_path: Path, make: Any, expected: str
) -> None:
    path = make(tmp_path)
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {path}")
    assert expected in result.output
    assert "Traceback" not in result.output


def test_the_valid_fixture_is_valid() -> None:
    assert orjson.loads(orjson.dumps(VALID))["schema_version"] == 1
    assert summarize_run(VALID)["models"]
