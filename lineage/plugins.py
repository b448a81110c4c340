"""Modules a user names in their own config (`plugins=[my_evidence]`), imported before the
job so that what they register (a kind of evidence, an architecture, a dataset) takes part.
Only the user's command line or YAML can name one: nothing read from a model file, a
metrics file or a remote reply ever reaches `load`."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from .errors import LineageError


def load(modules: Sequence[str]) -> None:
    for name in modules:
        if not isinstance(name, str) or not all(p.isidentifier() for p in name.split(".")):
            raise LineageError(f"plugins: {name!r} is not a module name")
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise LineageError(
                f"plugins: cannot import {name!r} ({e}); run from its folder or put it on "
                "PYTHONPATH"
            ) from None
