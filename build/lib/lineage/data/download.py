"""Opt-in downloads for users with internet. Nothing here runs unless data.download=true."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from ..errors import LineageError
from ..utils import atomic_write


def fetch(urls: list[str], dest: Path, timeout: float = 30.0) -> None:
    """Try each mirror in turn; write atomically so a failed download leaves nothing."""
    errors = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (fixed https URLs)
                atomic_write(dest, r.read())
            return
        except OSError as e:
            errors.append(f"{url}: {e}")
    raise LineageError(f"could not download {dest.name}: " + "; ".join(errors))
