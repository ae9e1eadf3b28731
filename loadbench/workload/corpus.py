"""Prompts of a wanted length cut from a body of text, measured with the workload's tokenizer.

The shipped ``corpus.txt`` is generated English-like prose (``scenarios/data/make_corpus.py``
writes it from a seeded grammar over common words: no one's copyright, the same bytes every
time). Each prompt starts at a seeded place in the text, so prompts differ and a server's
prefix cache does not make a synthetic workload look faster than it is.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from loadbench.workload.tokens import Tokenizer

__all__ = ["Corpus", "Prompt", "build_prompt", "read_corpus", "shipped_corpus"]

_MIN_CHARS = 64  # shorter than this, a corpus cannot start prompts at many places


@dataclass(frozen=True)
class Corpus:
    name: str  # "shipped" or the file name as written
    text: str


@dataclass(frozen=True)
class Prompt:
    text: str
    tokens: int  # as counted by the tokenizer that sized it
    exact: bool  # an exact tokenizer counted exactly the tokens wanted


def shipped_corpus() -> Corpus:
    text = resources.files("loadbench.workload").joinpath("corpus.txt").read_text("utf-8")
    return Corpus("shipped", text)


def read_corpus(path: Path, name: str) -> tuple[Corpus | None, str | None]:
    """The user's own text (any UTF-8 file); one line of problem when it will not do."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        return None, f"cannot read {name!r}: {exc}"
    if len(" ".join(text.split())) < _MIN_CHARS:
        return None, f"expected at least {_MIN_CHARS} characters of text in {name!r}"
    return Corpus(name, text), None


def build_prompt(
    tokens_wanted: int, tokenizer: Tokenizer, rng: random.Random, corpus: Corpus
) -> Prompt:
    """About ``tokens_wanted`` tokens of the corpus, exactly that many with an exact tokenizer.

    Text from a seeded word start, wrapped round the corpus as often as needed, is grown
    until it counts more than wanted, then cut at the longest prefix that counts at most
    that: a binary search over characters, so about log2(6 x tokens) + 3 counts per prompt,
    whatever the tokenizer. A prefix can count one short when the next character would add
    two tokens; ``exact`` then says so.
    """
    if tokens_wanted <= 0:
        return Prompt("", 0, tokenizer.exact)
    words = corpus.text.split()
    start = rng.randrange(len(words))
    flat = " ".join(words[start:] + words[:start])
    size = max(16, tokens_wanted * 6)  # English runs ~4.5 characters per token
    source = _cycle(flat, size)
    for _ in range(24):  # doubling: 6 x 2**24 characters per token is past any tokenizer
        if tokenizer.count(source) > tokens_wanted:
            break
        size *= 2
        source = _cycle(flat, size)
    low, high = 0, len(source)  # count(source[:low]) <= wanted < count(source[:high])
    while high - low > 1:
        mid = (low + high) // 2
        if tokenizer.count(source[:mid]) <= tokens_wanted:
            low = mid
        else:
            high = mid
    text = source[:low]
    got = tokenizer.count(text)
    return Prompt(text, got, tokenizer.exact and got == tokens_wanted)


def _cycle(flat: str, size: int) -> str:
    repeats = size // (len(flat) + 1) + 1
    return " ".join([flat] * repeats)[:size]
