"""A toy model for ``loadbench serve``: it answers with the prompt's words reversed.

    loadbench serve --adapter examples.echo_adapter:EchoAdapter --port 8011

An adapter is any class with ``generate(prompt, **params)``; ``load(weights_path)`` is
optional. Both may be plain or ``async``, and ``generate`` may return the whole text or
yield it in pieces: each piece is streamed as one token. This one yields a word at a
time, after a short pause, the way a small model on a CPU would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class EchoAdapter:
    name = "echo"  # the model id it serves (``--name`` overrides it)

    def __init__(self) -> None:
        self.pause_s = 0.0

    def load(self, weights_path: Path | None) -> None:
        """A real adapter reads its weights here, once, before the port opens."""
        if weights_path is not None:
            self.pause_s = float(Path(weights_path).read_text(encoding="utf-8").strip() or 0)

    def generate(self, prompt: str, **params: Any) -> Iterator[str]:
        """Plain and blocking: loadbench runs it in a worker thread, a piece per call."""
        words = prompt.split()[::-1] or ["(nothing)"]
        limit = params.get("max_tokens") or len(words)
        for word in words[:limit]:
            if self.pause_s:
                time.sleep(self.pause_s)
            yield word + " "
