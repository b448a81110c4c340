"""The one exception users see. Everything that is the caller's fault (bad config,
bad file, bad data) becomes a LineageError with a message that names the culprit.

Messages often quote file names and metadata, which strangers choose, and entry points
print them as one `error: ...` line. So the message is made printable here, once:
control characters (ANSI escapes, newlines) are shown as escapes and cannot repaint the
terminal or forge a second line.
"""

from __future__ import annotations

from typing import Any

from .text import printable


class LineageError(Exception):
    """A clear, user-facing error: bad input, bad file, bad config."""

    def __init__(self, message: Any = "", *args: Any):
        super().__init__(printable(message), *args)


class WriteError(LineageError, OSError):
    """A file could not be written (disk full, no permission, name too long). Still an
    OSError, so callers that handle I/O failures keep working; a LineageError, so entry
    points print one line instead of a traceback."""


class BudgetSpent(LineageError):
    """A suspect's query budget ran out (lineage.remote). Sampling stops at the last batch
    of points it finished; anywhere else it is a plain LineageError."""

    def __init__(self, message: str, budget: int):
        super().__init__(message)
        self.budget = budget
