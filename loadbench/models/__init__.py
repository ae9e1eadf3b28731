"""Choosing a model: names resolved the way Foundry Local's SDK does, and the endpoint
check (every model listed and answering) that comes before any load.
"""

from loadbench.models.annotate import export_csv, import_scores
from loadbench.models.catalog import (
    CatalogEntry,
    CatalogError,
    meta_for,
    read_catalog,
    server_meta,
)
from loadbench.models.check import ModelCheck, check_models, list_models, run_check
from loadbench.models.cost import model_cost
from loadbench.models.foundry import find_endpoint
from loadbench.models.judge import judge_samples
from loadbench.models.quality import (
    combine_scores,
    heuristic_score,
    heuristic_scores,
    judge_prompt,
    model_quality,
    parse_verdict,
)
from loadbench.models.resolve import AmbiguousModel, Resolution, resolve
from loadbench.models.samples import collect_samples

__all__ = [
    "AmbiguousModel",
    "CatalogEntry",
    "CatalogError",
    "ModelCheck",
    "Resolution",
    "check_models",
    "collect_samples",
    "combine_scores",
    "export_csv",
    "find_endpoint",
    "heuristic_score",
    "heuristic_scores",
    "import_scores",
    "judge_prompt",
    "judge_samples",
    "list_models",
    "meta_for",
    "model_cost",
    "model_quality",
    "parse_verdict",
    "read_catalog",
    "resolve",
    "run_check",
    "server_meta",
]
