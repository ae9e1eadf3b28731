"""The workload: what each request asks for (its prompt, its lengths, its session), decided
before the run from the scenario's ``[workload]`` section.

After ``scenario`` in the import order, before ``http`` and ``run``, which will call it:
``prepare_workload`` reads the files and picks the tokenizer once (exit 2 on any problem),
then ``Workload.item(i)`` gives request ``i``'s ``WorkItem``, the same every time. The rest
is pure and usable alone: seeded lengths (``distributions``), prompts of a set length
(``corpus``), dataset and trace parsing (``datasets``, ``trace``), session history
(``sessions``).
"""

from loadbench.workload.corpus import Corpus, Prompt, build_prompt, read_corpus, shipped_corpus
from loadbench.workload.datasets import DatasetEntry, parse_dataset, select_entries
from loadbench.workload.distributions import draw, draws, problems
from loadbench.workload.items import WorkItem, Workload
from loadbench.workload.prepare import choose_tokenizer, prepare_workload
from loadbench.workload.sessions import Conversation, Message, build_prefixes, group_of
from loadbench.workload.tokens import (
    ApproxTokenizer,
    FileTokenizer,
    ServerTokenizer,
    Tokenizer,
    load_tokenizer_file,
    probe_server,
)
from loadbench.workload.trace import TraceEntry, parse_trace, schedule

__all__ = [
    "ApproxTokenizer",
    "Conversation",
    "Corpus",
    "DatasetEntry",
    "FileTokenizer",
    "Message",
    "Prompt",
    "ServerTokenizer",
    "Tokenizer",
    "TraceEntry",
    "WorkItem",
    "Workload",
    "build_prefixes",
    "build_prompt",
    "choose_tokenizer",
    "draw",
    "draws",
    "group_of",
    "load_tokenizer_file",
    "parse_dataset",
    "parse_trace",
    "prepare_workload",
    "probe_server",
    "problems",
    "read_corpus",
    "schedule",
    "select_entries",
    "shipped_corpus",
]
