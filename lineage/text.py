"""Text that reaches a terminal or a report: control characters made visible.

File names, metadata and error text can come from strangers; a raw newline or ANSI escape
could forge a console line or rewrite the screen. `clean` shows each control character as
its escape (\\x1b, \\n), so the text reads the same and cannot act.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), str(text))
