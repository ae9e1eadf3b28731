"""Reading the scenario's files: the TOML file's text and the prompt file it may name.

Apart from the sections' checks because this is where bytes from disk become text: what
cannot be read (a directory, a FIFO, bad UTF-8, broken JSON) is worded here as one problem,
never an exception, so ``load_scenario`` still raises nothing but ``ScenarioError``.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

from loadbench.scenario.checks import Checker


def read_text(file: Path, label: str = "") -> tuple[str, str | None]:
    """The file's text, or the problem. A UTF-8 BOM (Windows editors add one) is accepted.

    Anything but a regular file is refused before opening: reading a FIFO would block.
    """
    try:
        mode = file.stat().st_mode
        if stat.S_ISDIR(mode):
            return "", f"cannot read{label}: Is a directory"
        if not stat.S_ISREG(mode):
            return "", f"cannot read{label}: not a regular file"
        data = file.read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return "", f"cannot read{label}: {reason}"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        where = f" in{label}" if label else ""
        return "", f"expected UTF-8 text{where}, got byte 0x{data[exc.start]:02x} at {exc.start}"


def toml_problem(message: str) -> str:
    """tomllib's "Invalid value (at line 3, column 9)" as "line 3, column 9: invalid TOML: …"."""
    m = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message, re.DOTALL)
    if m is None:
        return f"invalid TOML: {message}"
    return f"line {m[2]}, column {m[3]}: invalid TOML: {m[1]}"


def read_prompt_file(c: Checker, folder: Path, name: str) -> tuple[str, ...]:
    """Prompts from a JSON list or JSONL, each entry a string or ``{"prompt": string}``.

    A file whose first character is ``[`` is one JSON document; anything else is JSONL.
    At most five bad entries are listed, then a count: a big file should not flood.
    """
    text, problem = read_text(folder / name, f" {name!r}")
    if problem is not None:
        c.add(f"prompts.file: {problem}")
        return ()
    where = f"prompts.file: {name!r}"
    entries: list[tuple[str, object]] = []
    if text.lstrip().startswith("["):
        try:
            doc = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, or an integer of 4300+ digits
            c.add(f"{where}: invalid JSON: {_json_reason(exc)}")
            return ()
        except RecursionError:
            c.add(f"{where}: invalid JSON: nested too deeply")
            return ()
        entries = [(f"item {i}", v) for i, v in enumerate(doc)] if isinstance(doc, list) else []
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append((f"line {number}", json.loads(line)))
            except ValueError as exc:
                c.add(f"{where} line {number}: invalid JSON: {_json_reason(exc)}")
            except RecursionError:
                c.add(f"{where} line {number}: invalid JSON: nested too deeply")
    prompts: list[str] = []
    bad = 0
    for label, value in entries:
        prompt = value.get("prompt") if isinstance(value, dict) else value
        if isinstance(prompt, str) and prompt.strip() and _encodable(prompt):
            prompts.append(prompt)
            continue
        bad += 1
        if bad <= 5:
            want = 'a non-empty string or an object with a "prompt" string'
            c.expected(f"{where} {label}", want, value)
    if bad > 5:
        c.add(f"{where}: and {bad - 5} more entries like those")
    if not entries and (text.strip() == "" or text.lstrip().startswith("[")):
        c.add(f"prompts.file: expected at least one prompt in {name!r}, got none")
    return tuple(prompts)


def _json_reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return str(exc)  # with its line and column
    return str(exc).partition(":")[0]  # the 4300-digit limit's message, without its advice


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON "\ud800" escape
        return False
    return True
