"""Counting tokens, best first: the server's own tokenizer, a local ``tokenizer.json``, or an
approximation that says so.

Each method is one small class with ``name``, ``exact`` and ``count(text)``; there is no
registry: ``choose_tokenizer`` walks the chain. The server's ``/tokenize`` is called with a
synchronous httpx client because prompts are sized before the run (by the sync CLI or in
``anyio.to_thread``), never on the hot path. Special tokens (BOS) are left out everywhere,
so a count is of the text alone; the chat template adds the same few tokens to every
request, which the server's ``usage`` shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

__all__ = [
    "APPROX_TOKENS_PER_WORD",
    "ApproxTokenizer",
    "FileTokenizer",
    "ServerTokenizer",
    "Tokenizer",
    "load_tokenizer_file",
    "probe_server",
]

APPROX_TOKENS_PER_WORD = 1.3  # English prose on BPE vocabularies (GPT-2 to Llama 3)


class Tokenizer(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def exact(self) -> bool: ...

    def count(self, text: str) -> int: ...


@dataclass(frozen=True)
class ApproxTokenizer:
    """Whitespace words x 1.3, rounded up: within ~15% on English, worse on code or CJK."""

    name: str = f"approx (words x {APPROX_TOKENS_PER_WORD})"
    exact: bool = False

    def count(self, text: str) -> int:
        words = len(text.split())
        return -(-words * 13 // 10)  # ceil(words * 1.3) in integers: no float drift


@dataclass(frozen=True)
class FileTokenizer:
    """A ``tokenizer.json`` through the ``tokenizers`` library (the ``[workload]`` extra)."""

    name: str
    backend: Any  # tokenizers.Tokenizer; Any so the extra stays optional for mypy too
    exact: bool = True

    def count(self, text: str) -> int:
        return len(self.backend.encode(text, add_special_tokens=False).ids)


def load_tokenizer_file(path: Path) -> tuple[FileTokenizer | None, str | None]:
    """The tokenizer, or one line saying why not (the extra missing, a file that does not load)."""
    try:
        from tokenizers import Tokenizer as Backend  # the optional extra: imported when asked
    except ImportError:
        return None, (
            f"{str(path)!r} needs the tokenizers library: pip install 'loadbench[workload]'"
        )
    try:
        backend = Backend.from_file(str(path))
    except Exception as exc:  # the Rust side raises its own Exception for any bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"cannot load {str(path)!r} as a tokenizer.json: {reason[:120]}"
    return FileTokenizer(f"tokenizer.json ({path.name})", backend), None


@dataclass(frozen=True)
class ServerTokenizer:
    """The server's ``POST /tokenize``: llama.cpp's (``content``) or vLLM's (``prompt``)."""

    url: str  # the server's root + /tokenize (both serve it beside /v1, not under it)
    model: str
    flavour: str  # "llama.cpp" or "vllm": which body the server took when probed
    client: httpx.Client = field(repr=False)

    @property
    def name(self) -> str:
        return f"server /tokenize ({self.flavour})"

    @property
    def exact(self) -> bool:
        return True

    def count(self, text: str) -> int:
        """Raises httpx.HTTPError or ValueError: a server that answered the probe and then
        fails mid-way is a broken run, not a fallback."""
        response = self.client.post(self.url, json=self._body(text))
        response.raise_for_status()
        n = _token_count(response.content)
        if n is None:
            raise ValueError(f"{self.url}: expected tokens or count, got {response.text[:80]!r}")
        return n

    def _body(self, text: str) -> dict[str, object]:
        if self.flavour == "llama.cpp":
            return {"content": text, "add_special": False}
        return {"model": self.model, "prompt": text, "add_special_tokens": False}


def _token_count(content: bytes) -> int | None:
    try:
        doc = json.loads(content)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    count = doc.get("count")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return count
    tokens = doc.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


def tokenize_url(base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000/tokenize``."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root + "/tokenize"


def probe_server(
    client: httpx.Client, base_url: str, model: str
) -> tuple[ServerTokenizer | None, str]:
    """Whether the server tokenizes, tried once per body shape; and a line saying what happened.

    llama.cpp's body first: vLLM refuses it with 400 (no ``prompt``), while llama.cpp
    answers vLLM's body with an error too, so the order decides nothing but speed.
    """
    url = tokenize_url(base_url)
    why = "no answer"
    for flavour in ("llama.cpp", "vllm"):
        candidate = ServerTokenizer(url, model, flavour, client)
        try:
            response = client.post(url, json=candidate._body("Hello, world."))
        except httpx.HTTPError as exc:
            return None, f"{url}: {type(exc).__name__}"
        if response.status_code == 200 and (_token_count(response.content) or 0) > 0:
            return candidate, f"{url}: {flavour} /tokenize"
        why = f"HTTP {response.status_code}"
    return None, f"{url}: {why}"
