"""The block model a report is made of, and its Markdown and HTML renderers.

:mod:`loadbench.report.document` decides what a report says, as one list of blocks (headings,
paragraphs, tables, term lists); this module holds that model and draws it as Markdown or
as a self-contained HTML page, so that what a report says and how it looks change apart.
Block text is plain text: each renderer escapes it for its own format.
"""

from __future__ import annotations

import base64
import html as _html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: str
    warning: bool = False


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]  # right-aligned columns


@dataclass(frozen=True)
class Terms:
    items: tuple[tuple[str, str], ...]  # (term, text)


Block = Heading | Para | Table | Terms


# --- Markdown -----------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|])|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def _md(text: str) -> str:
    """Escape what GitHub would read as markup; intraword ``_`` (``http_503``) stays."""
    flat = " ".join(text.split())
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), flat)


def _md_block(block: Block) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + _md(block.text)
    if isinstance(block, Para):
        return ("> ⚠ " if block.warning else "") + _md(block.text)
    if isinstance(block, Terms):
        return "\n".join(f"- **{_md(term)}**: {_md(text)}" for term, text in block.items)
    lines = [
        "| " + " | ".join(_md(h) for h in block.header) + " |",
        "|" + "|".join("---:" if n else "---" for n in block.numeric) + "|",
    ]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in block.rows]
    return "\n".join(lines)


def to_markdown(blocks: Sequence[Block]) -> str:
    return "\n\n".join(_md_block(b) for b in blocks) + "\n"


# --- HTML ---------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0;
  --head: #f6f8fa; --warn-bg: #fff8c5; --warn-line: #d4a72c; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 1400px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.8em; border-bottom: 1px solid var(--line); padding-bottom: .3em; }
h2 { font-size: 1.35em; margin-top: 2em; border-bottom: 1px solid var(--line);
  padding-bottom: .25em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
p { max-width: 90ch; }
.warning { background: var(--warn-bg); border-left: 4px solid var(--warn-line);
  padding: 8px 12px; max-width: none; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0;
  font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 8px; white-space: nowrap; }
th { background: var(--head); font-weight: 600; }
td.num, th.num { text-align: right; }
tbody tr:nth-child(even) { background: #fbfcfd; }
ul.terms { padding-left: 1.2em; }
ul.terms li { margin: 2px 0; }
figure { margin: 16px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13px; }
"""


def _e(text: str) -> str:
    return _html.escape(text, quote=True)


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{_e(block.text)}</h{block.level}>"
    if isinstance(block, Para):
        if block.warning:
            return f'<p class="warning">⚠ {_e(block.text)}</p>'
        return f"<p>{_e(block.text)}</p>"
    if isinstance(block, Terms):
        items = "".join(
            f"<li><strong>{_e(term)}</strong>: {_e(text)}</li>" for term, text in block.items
        )
        return f'<ul class="terms">{items}</ul>'

    def cell(tag: str, text: str, numeric: bool) -> str:
        cls = ' class="num"' if numeric else ""
        return f"<{tag}{cls}>{_e(text)}</{tag}>"

    head = "".join(cell("th", h, n) for h, n in zip(block.header, block.numeric, strict=True))
    body = "\n".join(
        "<tr>"
        + "".join(cell("td", c, n) for c, n in zip(row, block.numeric, strict=True))
        + "</tr>"
        for row in block.rows
    )
    return (
        f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table></div>"
    )


def _figures(images: Mapping[str, bytes]) -> list[str]:
    parts = ["<h2>Plots</h2>"]
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        caption = _e(name.removesuffix(".png"))
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    return parts


def to_html(
    blocks: Sequence[Block], title: str, images: Mapping[str, bytes] | None, images_at: int
) -> str:
    """A self-contained page: inline CSS, no script, PNGs embedded as ``data:`` URIs.

    ``images`` (file name, its caption, to PNG bytes) go under a "Plots" heading just before
    ``blocks[images_at]``; none when ``images`` is empty.
    """
    rendered = [_html_block(b) for b in blocks]
    if images:
        rendered[images_at:images_at] = _figures(images)
    body = "\n".join(rendered)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
