"""The result file and what is computed from it: its format and schema, summaries and
scaling analysis, comparison of two runs and merging of several.
"""

from loadbench.results.analysis import summarize_run
from loadbench.results.compare import DEFAULT_METRICS, compare, parse_tolerance
from loadbench.results.file import (
    RecordWriter,
    build_document,
    default_path,
    dumps,
    load_result,
    thresholds_of,
    write_atomic,
)
from loadbench.results.merge import merge_results

__all__ = [
    "DEFAULT_METRICS",
    "RecordWriter",
    "build_document",
    "compare",
    "default_path",
    "dumps",
    "load_result",
    "merge_results",
    "parse_tolerance",
    "summarize_run",
    "thresholds_of",
    "write_atomic",
]
