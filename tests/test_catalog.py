"""The model catalog: the shipped file, every problem reported at once, and the merge of
catalog, scenario and server into the result's "meta" block, with each field's source.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest

from loadbench.models import CatalogEntry, CatalogError, meta_for, read_catalog, server_meta
from loadbench.sim.server import SimConfig, SimModel, serve

SHIPPED = Path(__file__).resolve().parent.parent / "scenarios" / "models.json"


def test_the_shipped_catalog_has_the_workshops_three_models() -> None:
    catalog = read_catalog(SHIPPED)
    assert sorted(catalog) == ["gemma-2-2b", "mistral-7b", "qwen2.5-0.5b"]
    assert catalog["qwen2.5-0.5b"] == CatalogEntry(("chat", "summarize"), 500.0, "apache-2.0")
    assert catalog["gemma-2-2b"].license == "gemma"
    assert catalog["mistral-7b"].size_mb == 4100.0


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    path.write_text(
        json.dumps(
            {
                "_comment": "ignored",
                "a": {"capabilities": "chat", "size_mb": -1, "license": ""},
                "b": {"sise_mb": 3, "parameters": 1.5},
                "c": [],
                "ok": {"size_mb": 1},
            }
        ),
        encoding="utf-8",
    )
    with pytest.raises(CatalogError) as info:
        read_catalog(path)
    assert info.value.exit_code == 2
    assert info.value.problems == (
        "a.capabilities: expected a list of strings, got 'chat'",
        "a.size_mb: expected a number >= 0, got -1",
        "a.license: expected a non-empty string, got ''",
        "b.sise_mb: unknown key (expected one of capabilities, size_mb, license, parameters, "
        "context)",
        "b.parameters: expected a positive integer, got 1.5",
        "c: expected an object of model facts, got []",
    )
    assert str(info.value).splitlines()[0] == f"{path}: a.capabilities: expected a list of " + (
        "strings, got 'chat'"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", r"expected an object of model aliases, got \[1, 2\]"),
    ],
)
def test_a_file_that_is_not_a_catalog(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "models.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError, match=problem):
        read_catalog(path)


def test_a_missing_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as info:
        read_catalog(tmp_path / "nope.json")
    assert info.value.exit_code == 2
    assert "cannot read" in str(info.value)


LISTING = {
    "object": "list",
    "data": [
        {"id": "qwen", "meta": {"n_params": 494032768, "size": 531000000, "n_ctx_train": 32768}},
        {"id": "plain"},
        {"id": "odd", "meta": {"n_params": "many", "size": True}},
        "junk",
    ],
}


def test_server_meta_reads_llamacpp_listing_in_the_blocks_names() -> None:
    want = {"qwen": {"parameters": 494032768, "context": 32768, "size_mb": 531.0}}
    assert server_meta(LISTING) == want
    assert server_meta(json.dumps(LISTING).encode()) == want
    assert server_meta(b"<html>") == server_meta(None) == server_meta({"data": 3}) == {}


def test_the_scenario_beats_the_server_beats_the_catalog() -> None:
    catalog = read_catalog(SHIPPED)
    meta = meta_for(
        "qwen2.5-0.5b",
        "qwen",
        catalog,
        {"license": "my-own", "name": "ignored"},
        server_meta(LISTING),
    )
    assert meta == {
        "size_mb": 531.0,
        "license": "my-own",
        "capabilities": ["chat", "summarize"],
        "parameters": 494032768,
        "context": 32768,
        "sources": {
            "size_mb": "server",
            "license": "scenario",
            "capabilities": "catalog",
            "parameters": "server",
            "context": "server",
        },
    }


def test_the_catalog_is_found_by_served_id_too_and_unknown_models_have_nulls() -> None:
    catalog = read_catalog(SHIPPED)
    by_id = meta_for("my-alias", "Mistral-7B", catalog, {}, {})
    assert by_id["size_mb"] == 4100.0
    assert by_id["sources"]["license"] == "catalog"
    assert meta_for("x", "y", catalog, {"capabilities": ()}, {}) == {
        "size_mb": None,
        "license": None,
        "capabilities": [],
        "parameters": None,
        "context": None,
        "sources": {},
    }


@pytest.mark.anyio
async def test_the_simulators_listing_feeds_server_meta() -> None:
    model = SimModel("qwen2.5-0.5b", n_params=494032768, size=531000000, n_ctx_train=32768)
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, SimConfig(models=(model, SimModel("other"))))
        async with httpx.AsyncClient(trust_env=False) as client:
            listing = (await client.get(f"http://127.0.0.1:{port}/v1/models")).content
        tg.cancel_scope.cancel()
    facts = server_meta(listing)
    meta = meta_for("qwen2.5-0.5b", "qwen2.5-0.5b", read_catalog(SHIPPED), {}, facts)
    assert meta["size_mb"] == 531.0
    assert meta["sources"] == {
        "size_mb": "server",
        "license": "catalog",
        "capabilities": "catalog",
        "parameters": "server",
        "context": "server",
    }
