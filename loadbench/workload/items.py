"""What the engine sends, one ``WorkItem`` per request index, the same for the same index.

Each index draws from its own generator, seeded with the workload's seed and the index, so
item 1,000 does not depend on items 0 to 999: a plan can be built in any order, a worker
can build only its shard, and a rerun sends the same bytes. The files (dataset, trace,
tokenizer, corpus) are read once by ``prepare_workload``; a ``Workload`` only computes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from loadbench.scenario import WorkloadSpec
from loadbench.workload.corpus import Corpus, Prompt, build_prompt
from loadbench.workload.datasets import DatasetEntry, output_hint
from loadbench.workload.distributions import draw
from loadbench.workload.sessions import Conversation, Message, group_of
from loadbench.workload.tokens import Tokenizer
from loadbench.workload.trace import TraceEntry

__all__ = ["WorkItem", "Workload"]


@dataclass(frozen=True)
class WorkItem:
    """One request's content, decided before the run; the history of a session is not."""

    index: int
    user: str  # this turn's question (the prompt, for a single-turn workload)
    max_tokens: int
    input_tokens_requested: int | None  # what the workload asked for; None: as the file has it
    input_tokens_counted: int | None  # the prompt (system + user) by the workload's tokenizer
    system: str | None = None  # a shared prefix, sent as the system message
    session_id: str | None = None
    turn: int = 1  # 1-based; turn > 1 is sent after turn - 1's answer
    turns: int = 1
    think_time_s: float = 0.0  # to wait after the previous turn's answer, before this one
    due_ns: int | None = None  # trace replay: after the stage's start, already sped up
    ignore_eos: bool = False

    def messages(self, history: Conversation | None = None) -> tuple[Message, ...]:
        """The chat request's messages; ``history`` is this session's turns so far."""
        if history is None:
            history = Conversation(self.session_id or "", self.system)
        return history.messages(self.user)

    def prompt(self) -> str:
        """The text for ``/v1/completions``, which has no roles: the prefix, then the question."""
        return self.user if self.system is None else f"{self.system}\n\n{self.user}"

    def body_fields(self) -> dict[str, object]:
        """What goes into the request body beside the messages.

        ``ignore_eos`` (vLLM, llama.cpp, SGLang) and ``min_tokens`` (vLLM) make the server
        write ``max_tokens`` whatever the model would do; other servers ignore them.
        """
        body: dict[str, object] = {"max_tokens": self.max_tokens}
        if self.ignore_eos:
            body |= {"ignore_eos": True, "min_tokens": self.max_tokens}
        return body


@dataclass(frozen=True)
class Workload:
    spec: WorkloadSpec
    tokenizer: Tokenizer
    tokenizer_note: str  # which tokenizer and why: "approx (words x 1.3): no /tokenize ..."
    corpus: Corpus
    default_max_tokens: int  # [request] max_tokens, when nothing else sets the length
    dataset: tuple[DatasetEntry, ...] = ()
    trace: tuple[TraceEntry, ...] = ()
    due_ns: tuple[int, ...] = ()  # the trace's schedule
    prefixes: tuple[Prompt, ...] = ()  # one per shared-prefix group
    _blocks: dict[tuple[int, int], str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def size(self) -> int | None:
        """How many distinct items there are: a trace's length; None when items never end
        (synthetic text, or a dataset cycled through again in the same order)."""
        return len(self.trace) if self.spec.trace is not None else None

    @property
    def turns(self) -> int:
        return 1 if self.spec.sessions is None else self.spec.sessions.turns

    @property
    def approximate(self) -> bool:
        """The lengths are estimates: the result must say so beside them."""
        return not self.tokenizer.exact

    def items(self, count: int, start: int = 0) -> tuple[WorkItem, ...]:
        return tuple(self.item(i) for i in range(start, start + count))

    def item(self, index: int) -> WorkItem:
        """Item ``index``; raises IndexError past a trace's end."""
        if index < 0:
            raise IndexError(index)
        rng = random.Random(f"{self.spec.seed}:{index}")
        if self.spec.trace is not None:
            return self._trace_item(index, rng)
        session, turn = divmod(index, self.turns)
        system = None
        if self.prefixes:
            system = self.prefixes[group_of(session, len(self.prefixes))].text
        hint: int | None = None
        if self.dataset:
            entry = self.dataset[index % len(self.dataset)]
            user, wanted = entry.prompt, None
            hint = output_hint(entry, self.tokenizer.count)
        else:
            assert self.spec.input_tokens is not None  # the scenario reader insists on a source
            wanted = draw(self.spec.input_tokens, rng)
            user = build_prompt(wanted, self.tokenizer, rng, self.corpus).text
        think = 0.0
        if self.spec.sessions is not None and turn > 0:
            think = self.spec.sessions.think_time_s
        return WorkItem(
            index,
            user,
            self._max_tokens(rng, hint),
            wanted,
            self.tokenizer.count(user if system is None else f"{system}\n\n{user}"),
            system,
            f"s{session}" if self.spec.sessions is not None else None,
            turn + 1,
            self.turns,
            think,
            None,
            self.spec.ignore_eos,
        )

    def _max_tokens(self, rng: random.Random, hint: int | None) -> int:
        if self.spec.output_tokens is not None:
            return draw(self.spec.output_tokens, rng)
        return hint if hint is not None else self.default_max_tokens

    def _trace_item(self, index: int, rng: random.Random) -> WorkItem:
        entry = self.trace[index]
        text = self._trace_prompt(entry, rng)
        return WorkItem(
            index,
            text,
            self._max_tokens(rng, entry.output_tokens),
            entry.input_tokens,
            self.tokenizer.count(text),
            session_id=entry.session_id,
            due_ns=self.due_ns[index],
            ignore_eos=self.spec.ignore_eos,
        )

    def _trace_prompt(self, entry: TraceEntry, rng: random.Random) -> str:
        """Requests with the same leading ``hash_ids`` get the same leading text.

        Every hash but the last is a full block of ``block_tokens`` built from that hash
        alone; the rest of the length comes from the last hash and the length, so a
        prefix cache sees the sharing the trace recorded.
        """
        assert self.spec.trace is not None
        block = self.spec.trace.block_tokens
        full = min(len(entry.hash_ids) - 1, (entry.input_tokens - 1) // block)
        if full <= 0:
            return build_prompt(entry.input_tokens, self.tokenizer, rng, self.corpus).text
        parts = [self._block(h, block) for h in entry.hash_ids[:full]]
        rest = entry.input_tokens - full * block
        tail = random.Random(f"{self.spec.seed}:block:{entry.hash_ids[full]}:{rest}")
        parts.append(build_prompt(rest, self.tokenizer, tail, self.corpus).text)
        return " ".join(parts)

    def _block(self, hash_id: int, tokens: int) -> str:
        key = (hash_id, tokens)
        if key not in self._blocks:
            rng = random.Random(f"{self.spec.seed}:block:{hash_id}")
            self._blocks[key] = build_prompt(tokens, self.tokenizer, rng, self.corpus).text
        return self._blocks[key]
