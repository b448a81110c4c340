"""lineage: is model B derived from model A, and how far was it modified?

    import lineage
    cal = lineage.calibrate(parent, references, x, y)          # once per parent
    v = lineage.judge(parent, suspect, x, y, calibration=cal)  # per suspect
    v.is_lineage, v.evidence["closeness"].score, v.evidence["basin"].barrier, v.explain()

Models are plain nn.Modules returning logits (or an object with .logits), or, as suspects,
any callable answering logits or labels (a black box: closeness alone applies).
"""

from __future__ import annotations

from typing import Any

from .errors import LineageError

__all__ = [
    "Calibration",
    "LineageError",
    "Tree",
    "Verdict",
    "calibrate",
    "closeness",
    "derive",
    "determine",
    "judge",
    "load_model",
    "tree",
]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `import lineage` stays cheap (the CLI parses its arguments
    # before torch and Hydra load) and `lineage.errors` has no heavy dependencies.
    if name in ("Calibration", "Verdict", "calibrate", "judge"):
        from . import engine

        return getattr(engine, name)
    if name in ("closeness", "derive", "determine", "load_model"):
        from . import api

        return getattr(api, name)
    if name in ("Tree", "tree"):  # the module is lineage.trees: `lineage.tree` is the function
        from . import trees

        return getattr(trees, name)
    raise AttributeError(f"module 'lineage' has no attribute {name!r}")
