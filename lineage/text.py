"""Text that reaches a terminal or a report: the one place control characters are escaped.

File names, model metadata, job directory names and error messages can come from
strangers. Printed raw, an ANSI escape repaints the terminal and a newline forges a line
("error: ..." or a verdict); copied raw into Markdown, `<img onerror=...>` runs in a
browser and a backtick fence closes the code block around it. Everything that prints or
renders such text goes through `printable`; Markdown goes through `md_text` / `md_fence`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# C0 and C1 controls, DEL, and the Unicode format characters that reorder or hide text
# (bidi overrides and isolates, line/paragraph separators, zero-width joiners, BOM).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: Any, keep: str = "") -> str:
    """`text` as a string with every control or format character shown as an escape
    (`\\x1b`, `\\n`, `\\u202e`), so it prints as exactly what it is, on one line.
    Characters in `keep` (e.g. "\\n\\t" for a multi-line code block) pass through."""
    s = text if isinstance(text, str) else str(text)
    return _CONTROL.sub(lambda m: m.group() if m.group() in keep else _escape(m.group()), s)


def has_control(text: str) -> bool:
    """Whether `text` holds a control or format character (`printable` would escape it)."""
    return _CONTROL.search(text) is not None


def shorten(text: Any, limit: int = 120) -> str:
    """`printable(text)`, cut in the middle to at most `limit` characters."""
    s = printable(text)
    if len(s) <= limit:
        return s
    half = (limit - 1) // 2
    return s[:half] + "…" + s[len(s) - (limit - 1 - half) :]


# Characters that start Markdown inline constructs: code spans, emphasis, links and
# images, tables, strikethrough, escapes. `<`, `>` and `&` become HTML entities first, so
# no raw HTML survives. An underscore inside a word cannot open emphasis (CommonMark), so
# `missing_job` stays readable; parentheses only matter after `]`, which is escaped.
_MD_SPECIAL = re.compile(r"([\\`*\[\]|~])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# What turns a line into a heading, list item, rule or setext underline at its start.
_MD_LINE_START = re.compile(r"^(#|[-+=]|\d+(?=[.)]))")


def md_text(text: Any, block: bool = False) -> str:
    """Inline Markdown text (a table cell, a caption) that renders as exactly `text`:
    one line, no raw HTML, no emphasis, links or code spans. `block=True` for text that
    starts a line (a paragraph), so it cannot become a heading or a list either."""
    s = html.escape(printable(text), quote=False)
    s = _MD_SPECIAL.sub(lambda m: "\\" + m.group(), s)
    if block:
        s = _MD_LINE_START.sub(
            lambda m: m.group() + "\\" if m.group()[0].isdigit() else "\\" + m.group(), s
        )
    return s


def md_fence(text: str, info: str = "") -> str:
    """A fenced code block holding `text` verbatim. The fence is one backtick longer than
    the longest run of backticks inside, so nothing in `text` can close it (CommonMark:
    a closing fence is at least as long as the opening one)."""
    body = printable(text, keep="\n\t").rstrip("\n")
    runs = [len(r) for r in re.findall(r"`+", body)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}{re.sub(r'[^A-Za-z0-9_+-]', '', info)}\n{body}\n{fence}"


@contextmanager
def plain_figure_text() -> Iterator[None]:
    """Matplotlib draws every label as the plain text it is: no mathtext (a `$` in a
    modification name would otherwise be parsed, and `fine$\\foo{$tune` raises) and no
    LaTeX. Text objects read these settings when they are created, so figures are built
    and saved inside this block."""
    import matplotlib

    with matplotlib.rc_context({"text.usetex": False, "text.parse_math": False}):
        yield
