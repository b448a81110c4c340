"""The data group's options: the defaults and the checks (lineage.settings). A dataset's
YAML (conf/data/<name>.yaml) sets only what differs for it; a `_target_` dataset's other
keys are its factory's arguments (lineage.data.base.OWN_KEYS are these fields)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from ..errors import LineageError
from ..settings import SEED_MAX, knob


@dataclass
class DataConf:
    name: str = MISSING  # a registered dataset (lineage.data.DATASETS)
    _target_: str | None = knob(None)  # a dataset factory instead of `name`
    root: str = knob("data")  # the folder holding the dataset's files
    classes: list[int] | None = knob(None)  # keep these labels, relabelled 0..k-1
    limit: int | None = knob(None, lo=1)  # samples per split, for fast runs
    val_fraction: float = knob(0.1, lo=0.0, hi=0.9)
    split_seed: int = knob(0, lo=0, hi=SEED_MAX)  # the split, fixed whatever the run's seed
    batch_size: int = knob(128, lo=1, hi=2**20)
    download: bool = knob(False)  # fetch missing files (never in tests or CI)
    epochs: int = knob(10, lo=0, hi=10**6)  # how long a parent trains on this data
    workers: int = knob(0, lo=0, hi=64)  # DataLoader worker processes (0: in-process)

    def check(self, where: str = "data") -> None:
        check_classes(self.classes, f"{where}.classes")


def check_classes(classes: Any, where: str) -> None:
    """null (every class), or at least two distinct non-negative class labels: a
    classifier of one class has nothing to learn, and its metrics are undefined."""
    if classes is None:
        return
    ok = isinstance(classes, list | tuple) and all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 2**16 for c in classes
    )
    if not ok:
        raise LineageError(f"{where}={classes!r}: must be a list of class labels (integers)")
    if len(set(classes)) < 2 or len(set(classes)) != len(classes):
        raise LineageError(f"{where}={list(classes)}: must list at least two distinct classes")
