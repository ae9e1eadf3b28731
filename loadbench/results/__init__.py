"""The result file and what is computed from it: its format and schema, summaries and
scaling analysis (with a search's answer), comparison of two runs and merging of several.
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
from loadbench.results.search import search_block, search_line, stage_verdict

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
    "search_block",
    "search_line",
    "stage_verdict",
    "summarize_run",
    "thresholds_of",
    "write_atomic",
]
