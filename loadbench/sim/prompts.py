"""What a prompt costs the simulator and how long its answer is: pure, no sockets, no clock.

The tokenizer, the prefix cache, and the draw of an answer that stops early.

A token is a whitespace-separated word, everywhere in the simulator: ``usage``, ``timings``,
``POST /tokenize`` and the prefix cache all count the same way, so a workload sized with the
simulator's own ``/tokenize`` gets exactly the prompt length it asked for back in ``usage``.

The prefix cache works as vLLM's automatic prefix caching does: the prompt's words (every
message's, in order) are cut into blocks of ``BLOCK_WORDS``; each full block's hash is chained
with every block before it, so a block hits only when the whole prompt up to its end was seen
before. Only leading hits count (the first miss ends the cached prefix), and at least one
token is always computed, as vLLM recomputes the last one. The generated words are cached
too when a response ends, so a conversation that re-sends its history (question and answer)
hits on all of it.
"""

from __future__ import annotations

import random
import zlib
from collections import OrderedDict
from collections.abc import Sequence

import orjson

BLOCK_WORDS = 16  # vLLM's default block size, in tokens
CACHE_BLOCKS = 100_000  # block hashes remembered; the least recently used go first
VOCAB = 32_000  # token ids are a word's CRC-32 modulo this: stable across runs and machines


def prompt_words(value: object) -> list[str]:
    """The prompt's tokens: whitespace-separated words, in order.

    Handles a string, a list of strings, token ids (each one token, its decimal digits as
    the word) and chat content parts (``{"type": "text", "text": ...}``) or messages
    (``{"content": ...}``); anything else has no words.
    """
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        words: list[str] = []
        for v in value:
            if isinstance(v, int):
                words.append(str(v))
            else:
                words += prompt_words(v)
        return words
    if isinstance(value, dict):
        return prompt_words(value.get("text", value.get("content", "")))
    return []


def count_words(value: object) -> int:
    """Prompt tokens as the simulator defines them (``prompt_words``), counted."""
    if isinstance(value, str):
        return len(value.split())  # the common case, without the list
    return len(prompt_words(value))


def tokenize(body: bytes) -> bytes:
    """``POST /tokenize`` in llama.cpp's shape or vLLM's; raises ValueError for a 400.

    llama.cpp: ``{"content": "..."}`` -> ``{"tokens": [...]}``. vLLM: ``{"prompt": "..."}``
    or ``{"messages": [...]}`` (with a ``model``) -> ``{"tokens": [...], "count": n}``.
    Other keys (``add_special``, ``add_special_tokens``) are accepted and change nothing:
    the simulator has no special tokens.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("request body must be a JSON object")
    if "content" in data:
        if not isinstance(data["content"], str | list):
            raise ValueError("'content' must be a string or a list")
        return orjson.dumps({"tokens": token_ids(prompt_words(data["content"]))})
    if "prompt" in data or "messages" in data:
        source = data.get("prompt", data.get("messages"))
        if not isinstance(source, str | list):
            raise ValueError("'prompt' must be a string or a list, 'messages' a list")
        tokens = token_ids(prompt_words(source))
        return orjson.dumps({"tokens": tokens, "count": len(tokens)})
    raise ValueError("missing required field 'content' (llama.cpp) or 'prompt' (vLLM)")


def token_ids(words: Sequence[str]) -> list[int]:
    return [zlib.crc32(w.encode("utf-8", "surrogatepass")) % VOCAB for w in words]


def block_hashes(seed: str, words: Sequence[str]) -> list[int]:
    """Each full block's hash, chained with all before it; ``seed`` keeps models apart."""
    chained = hash(seed)
    out = []
    for start in range(0, len(words) - BLOCK_WORDS + 1, BLOCK_WORDS):
        chained = hash((chained, *words[start : start + BLOCK_WORDS]))
        out.append(chained)
    return out


class PrefixCache:
    """Chained block hashes, least recently used evicted first, at most ``capacity``."""

    def __init__(self, capacity: int = CACHE_BLOCKS) -> None:
        self.capacity = capacity
        self.blocks: OrderedDict[int, None] = OrderedDict()

    def admit(self, seed: str, words: Sequence[str]) -> int:
        """The prompt's cached tokens; its blocks are remembered from now on.

        Leading hits only, and at most ``len(words) - 1``: one token is always computed.
        """
        hits = 0
        counting = True
        for h in block_hashes(seed, words):
            if counting and h in self.blocks:
                hits += 1
                self.blocks.move_to_end(h)
            else:
                counting = False
                self._add(h)
        return max(0, min(hits * BLOCK_WORDS, len(words) - 1))

    def remember(self, seed: str, words: Sequence[str]) -> None:
        """A finished response: its prompt and answer together, as the next turn sends them."""
        for h in block_hashes(seed, words):
            if h in self.blocks:
                self.blocks.move_to_end(h)
            else:
                self._add(h)

    def _add(self, h: int) -> None:
        self.blocks[h] = None
        if len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)


def early_length(rng: random.Random, rate: float, max_tokens: int) -> int | None:
    """The length of an answer that ends early ("stop"), or None for a full one.

    One draw per request when ``rate`` is set (a second for the length when it stops), from
    the caller's own generator, so the fault draws of a seeded run stay where they were.
    An answer of one token cannot end earlier.
    """
    if not rate or rng.random() >= rate or max_tokens < 2:
        return None
    return rng.randint(1, max_tokens - 1)
