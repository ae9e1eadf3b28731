"""The model comparison in the report, on a hand-made document: the table by value, the
sample answers, the trade-off plot, and nothing at all for documents without models."""

from __future__ import annotations

from typing import Any

from loadbench.report import models_blocks, tradeoff_plot
from loadbench.report.blocks import Heading, Table, Terms, to_markdown
from loadbench.report.models_section import HEADER
from tests.test_report import make_doc, make_stage, sweep_doc

PNG = b"\x89PNG\r\n\x1a\n"


def _server(rss: float, gpu_own: float | None, gpu_used: float) -> dict[str, Any]:
    return {
        "rss_mb_max": rss,
        "gpus": [{"index": 0, "memory_used_mb": gpu_used, "process_memory_mb": gpu_own}],
    }


def _model(name: str, status: str = "ok", **extra: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "name": name,
        "served_as": f"{name}-cuda-gpu:1",
        "status": status,
        "reason": None if status == "ok" else "not in the catalog",
        "meta": {
            "size_mb": 822.5,
            "license": "apache-2.0",
            "capabilities": ["chat", "tools"],
            "parameters": None,
            "context": None,
            "sources": {},
        },
        "samples": [],
        "quality": None,
        "cost": None,
    }
    block.update(extra)
    return block


def models_doc() -> dict[str, Any]:
    fast = [
        make_stage("qwen", 1, ttft_ms=(20.0, 30.0), itl_ms=(4.0, 6.0), e2e_ms=(100.0, 120.0)),
        make_stage("qwen", 8, output_tokens_per_s=900.0),
    ]
    fast[0]["server"] = _server(700.0, 1500.0, 9000.0)
    fast[1]["server"] = _server(800.0, 1800.0, 9500.0)
    slow = [make_stage("phi-4-mini-cuda-gpu:1", 1, output_tokens_per_s=40.0)]
    slow[0]["server"] = _server(2000.0, None, 12000.0)  # the driver did not say whose memory
    doc = make_doc(fast + slow)
    answer = "Time to first token: " + "x" * 300
    doc["models"] = [
        _model(
            "qwen",
            samples=[
                {"prompt_id": "p1", "answer": "", "error": "timed out"},
                {"prompt_id": "p2", "answer": answer, "error": None},
            ],
            quality={"method": "judge", "score": 3.5, "scores": []},
            cost={
                "currency": "EUR",
                "price_per_kwh": 0.3,
                "watts": 300.0,
                "watts_source": "measured-nvml",
                "per_million_output_tokens": {"c=1": 1.04, "c=8": 0.0926},
            },
        ),
        _model(
            "phi-4-mini",
            samples=[{"prompt_id": "p1", "answer": "Short.", "error": None}],
            quality={"method": "mixed", "score": None, "scores": []},
        ),
        _model("gemma-2b", status="skipped"),
    ]
    return doc


def _rows(blocks: list[Any]) -> dict[str, dict[str, str]]:
    (table,) = [b for b in blocks if isinstance(b, Table)]
    assert table.header == HEADER
    return {row[0]: dict(zip(table.header, row, strict=True)) for row in table.rows}


def test_one_row_per_model_with_the_lowest_load_latency_and_the_best_throughput() -> None:
    blocks = models_blocks([("run1", models_doc())])
    assert blocks[0] == Heading(2, "run1 · model comparison")
    rows = _rows(blocks)
    assert list(rows) == ["qwen", "phi-4-mini", "gemma-2b"]
    qwen = rows["qwen"]
    assert qwen["served as"] == "qwen-cuda-gpu:1"
    assert qwen["status"] == "ok"
    assert (qwen["TTFT mean"], qwen["E2E mean"]) == ("25.0", "110.0")  # from c=1
    # 1000 / TPOT mean 5 ms (the histogram's mean, within its 3 significant digits)
    assert abs(float(qwen["tok/s per request"]) - 200.0) < 0.2
    assert qwen["tok/s aggregate"] == "900.00"  # the c=8 stage
    assert qwen["quality"] == "3.50 (judge)"
    assert (qwen["server RSS peak MB"], qwen["GPU mem peak MB"]) == ("800", "1800")
    assert (qwen["size MB"], qwen["licence"], qwen["capabilities"]) == (
        "822",
        "apache-2.0",
        "chat, tools",
    )
    assert qwen["cost / M output tokens"] == "0.0926 EUR (c=8)"
    phi = rows["phi-4-mini"]  # its stages carry the served id
    assert phi["tok/s aggregate"] == "40.00"
    assert phi["GPU mem peak MB"] == "12000"  # the whole device, no process figure
    assert phi["quality"] == "— (mixed)"
    gemma = rows["gemma-2b"]
    assert gemma["status"] == "skipped: not in the catalog"
    assert gemma["TTFT p95"] == gemma["tok/s aggregate"] == gemma["cost / M output tokens"] == "—"


def test_a_short_sample_answer_per_model_that_answered() -> None:
    blocks = models_blocks([("run1", models_doc())])
    (terms,) = [b for b in blocks if isinstance(b, Terms)]
    answers = dict(terms.items)
    assert set(answers) == {"qwen", "phi-4-mini"}  # gemma was skipped: no answer
    assert answers["qwen"].startswith("Time to first token: xxx")  # the failed one skipped
    assert len(answers["qwen"]) == 201
    assert answers["qwen"].endswith("…")
    assert answers["phi-4-mini"] == "Short."
    assert "model comparison" in to_markdown(blocks)


def test_documents_without_models_get_nothing() -> None:
    assert models_blocks([("a", sweep_doc()), ("b", sweep_doc())]) == []
    assert tradeoff_plot([("a", sweep_doc())]) == {}


def test_tradeoff_plot_is_a_png_per_run_with_models() -> None:
    images = tradeoff_plot([("old", sweep_doc()), ("run 1", models_doc())])
    assert list(images) == ["tradeoff-run_1.png"]
    assert images["tradeoff-run_1.png"].startswith(PNG)


def test_no_tradeoff_plot_without_a_scored_model() -> None:
    doc = models_doc()
    for model in doc["models"]:
        model["quality"] = None
    assert tradeoff_plot([("run1", doc)]) == {}
