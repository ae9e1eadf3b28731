"""The ``[workload]`` section's files read and its tokenizer chosen: a ``Workload`` or exit 2.

The one place in this room that touches the disk and the network, once, before the first
request. Every problem is collected and raised together as a ``ScenarioError`` against the
scenario file, worded like the scenario reader's (``workload.trace.file: 'x.jsonl' line 7:
...``), so a bad dataset stops the run the same way a bad key does.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from loadbench.errors import ScenarioError
from loadbench.scenario import DatasetSpec, TokenizerChoice, TraceSpec, WorkloadSpec
from loadbench.workload.corpus import Corpus, Prompt, read_corpus, shipped_corpus
from loadbench.workload.datasets import DatasetEntry, parse_dataset, select_entries
from loadbench.workload.items import Workload
from loadbench.workload.sessions import build_prefixes
from loadbench.workload.tokens import ApproxTokenizer, Tokenizer, load_tokenizer_file, probe_server
from loadbench.workload.trace import TraceEntry, parse_trace, schedule

__all__ = ["choose_tokenizer", "prepare_workload"]


def prepare_workload(
    spec: WorkloadSpec,
    *,
    scenario_path: str,
    default_max_tokens: int,
    base_url: str | None = None,
    model: str = "",
    client: httpx.Client | None = None,
) -> Workload:
    """Everything ``spec`` names, loaded and checked; raises only ``ScenarioError``.

    ``base_url``, ``model`` and ``client`` let the server's ``/tokenize`` be tried; the
    client stays the caller's, open for as long as the workload is used.
    """
    problems: list[str] = []
    folder = Path(spec.folder)
    tokenizer, note, problem = choose_tokenizer(spec, base_url=base_url, model=model, client=client)
    _add(problems, "workload.tokenizer", problem)
    corpus: Corpus | None = shipped_corpus()
    if spec.corpus is not None:
        corpus, problem = read_corpus(folder / spec.corpus, spec.corpus)
        _add(problems, "workload.corpus", problem)
    entries: tuple[DatasetEntry, ...] = ()
    trace: tuple[TraceEntry, ...] = ()
    if spec.dataset is not None and tokenizer is not None:
        entries = _dataset(problems, folder, spec.dataset, spec.seed, tokenizer)
    if spec.trace is not None:
        trace = _trace(problems, folder, spec.trace)
    if problems or tokenizer is None or corpus is None:
        raise ScenarioError(scenario_path, problems)
    prefixes: tuple[Prompt, ...] = ()
    if spec.shared_prefix is not None:
        p = spec.shared_prefix
        prefixes = build_prefixes(p.groups, p.prefix_tokens, tokenizer, corpus, spec.seed)
    due = schedule(trace, spec.trace.speedup) if spec.trace is not None else ()
    return Workload(
        spec, tokenizer, note, corpus, default_max_tokens, entries, trace, due, prefixes
    )


def choose_tokenizer(
    spec: WorkloadSpec,
    *,
    base_url: str | None,
    model: str,
    client: httpx.Client | None,
) -> tuple[Tokenizer | None, str, str | None]:
    """The tokenizer, a note for the result on which and why, and a problem if none will do.

    ``auto`` tries the server and falls back to the approximation; ``server`` insists.
    """
    choice = spec.tokenizer
    if choice == TokenizerChoice.APPROX:
        approx = ApproxTokenizer()
        return approx, f"{approx.name}: asked for", None
    if choice in (TokenizerChoice.AUTO, TokenizerChoice.SERVER):
        why = "no server to ask"
        if client is not None and base_url is not None:
            server, why = probe_server(client, base_url, model)
            if server is not None:
                return server, why, None
        if choice == TokenizerChoice.SERVER:
            return None, "", f"expected a server that answers POST /tokenize, got {why}"
        approx = ApproxTokenizer()
        return approx, f"{approx.name}: {why}", None
    local, problem = load_tokenizer_file(Path(spec.folder) / choice)
    if local is None:
        return None, "", problem
    return local, f"{local.name}: {choice}", None


def _add(problems: list[str], key: str, problem: str | None) -> None:
    if problem is not None:
        problems.append(f"{key}: {problem}")


def _read(problems: list[str], key: str, path: Path, name: str) -> str | None:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problems.append(f"{key}: cannot read {name!r}: {reason[:120]}")
        return None


def _dataset(
    problems: list[str], folder: Path, spec: DatasetSpec, seed: int, tokenizer: Tokenizer
) -> tuple[DatasetEntry, ...]:
    key = "workload.dataset.file"
    text = _read(problems, key, folder / spec.file, spec.file)
    if text is None:
        return ()
    entries, found = parse_dataset(text, spec.format, f"{key}: {spec.file!r}")
    problems.extend(found)
    if found:
        return ()
    kept = select_entries(entries, spec, seed, tokenizer.count)
    if not kept:
        problems.append(
            f"workload.dataset: expected some of the {len(entries)} entries in {spec.file!r} "
            "to pass the length filters, got none"
        )
    return kept


def _trace(problems: list[str], folder: Path, spec: TraceSpec) -> tuple[TraceEntry, ...]:
    key = "workload.trace.file"
    text = _read(problems, key, folder / spec.file, spec.file)
    if text is None:
        return ()
    trace, found = parse_trace(text, f"{key}: {spec.file!r}")
    problems.extend(found)
    return trace
