"""A progress bar on a terminal, nothing in logs."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(enabled: bool, total: int, desc: str) -> Any:
    if not (enabled and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="pt", file=sys.stderr, leave=False)
