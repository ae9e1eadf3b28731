"""Multi-turn sessions and shared-prefix groups, as messages a chat request carries.

A session is one virtual user's conversation: turn t is sent after turn t-1's answer (and
the think time), and carries every earlier question and answer, as chat apps and agents
do, so a server with a prefix cache prefills only the new turn. The answers are not known
before the run, so ``Conversation`` takes them as they come and builds each turn's
messages; everything else about a session is fixed by the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from loadbench.workload.corpus import Corpus, Prompt, build_prompt
from loadbench.workload.tokens import Tokenizer

__all__ = ["Conversation", "Message", "build_prefixes", "group_of"]


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str

    def to_json(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Conversation:
    """The history of one session so far; ``after`` returns a new one, this one unchanged."""

    session_id: str
    system: str | None = None  # a shared prefix, sent first in every turn
    turns: tuple[tuple[str, str], ...] = ()  # (question, answer) for each finished turn

    def messages(self, user: str) -> tuple[Message, ...]:
        """The next turn's messages: the system prefix, the history, then the new question."""
        out = [] if self.system is None else [Message("system", self.system)]
        for question, answer in self.turns:
            out += [Message("user", question), Message("assistant", answer)]
        out.append(Message("user", user))
        return tuple(out)

    def after(self, user: str, answer: str) -> Conversation:
        return Conversation(self.session_id, self.system, (*self.turns, (user, answer)))


def group_of(index: int, groups: int) -> int:
    """Round-robin, so every group is used as soon as there are ``groups`` requests."""
    return index % groups


def build_prefixes(
    groups: int, prefix_tokens: int, tokenizer: Tokenizer, corpus: Corpus, seed: int
) -> tuple[Prompt, ...]:
    """One system prefix per group, each from its own seeded place in the corpus."""
    return tuple(
        build_prompt(prefix_tokens, tokenizer, random.Random(f"{seed}:prefix:{g}"), corpus)
        for g in range(groups)
    )
