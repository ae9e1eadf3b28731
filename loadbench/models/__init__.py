"""Choosing a model: names resolved the way Foundry Local's SDK does, and the endpoint
check (every model listed and answering) that comes before any load.
"""

from loadbench.models.check import ModelCheck, check_models, list_models, run_check
from loadbench.models.foundry import find_endpoint
from loadbench.models.resolve import AmbiguousModel, Resolution, resolve

__all__ = [
    "AmbiguousModel",
    "ModelCheck",
    "Resolution",
    "check_models",
    "find_endpoint",
    "list_models",
    "resolve",
    "run_check",
]
