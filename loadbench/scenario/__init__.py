"""The scenario: a TOML file read and checked into frozen dataclasses, and the command
line's overrides on top. Everything downstream takes a ``Scenario`` and never reads the file.

``model`` is the data and imports nothing from its siblings; ``read`` turns a file into it,
``overrides`` lays the command line on top, and both word problems through ``checks``.
``read_models`` and ``read_workload`` read the larger sections into their own dataclasses.
"""

from loadbench.scenario.model import (
    Api,
    Arrival,
    CostSpec,
    LaunchSpec,
    LoadMode,
    ModelMeta,
    ModelSpec,
    QualitySpec,
    RequestSpec,
    Scenario,
    SearchSpec,
    redact_argv,
)
from loadbench.scenario.overrides import apply_overrides, parse_float_list, parse_int_list
from loadbench.scenario.read import load_scenario
from loadbench.scenario.workload_model import (
    MAX_TOKENS,
    DatasetFormat,
    DatasetSpec,
    Dist,
    LengthDist,
    TokenizerChoice,
    TraceSpec,
    WorkloadSpec,
)

__all__ = [
    "MAX_TOKENS",
    "Api",
    "Arrival",
    "CostSpec",
    "DatasetFormat",
    "DatasetSpec",
    "Dist",
    "LaunchSpec",
    "LengthDist",
    "LoadMode",
    "ModelMeta",
    "ModelSpec",
    "QualitySpec",
    "RequestSpec",
    "Scenario",
    "SearchSpec",
    "TokenizerChoice",
    "TraceSpec",
    "WorkloadSpec",
    "apply_overrides",
    "load_scenario",
    "parse_float_list",
    "parse_int_list",
    "redact_argv",
]
