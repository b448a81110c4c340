"""Hydra callbacks that turn launch-time failures into one clear line instead of a traceback.

Hydra creates the output folder itself, before our job code runs, so an unwritable
`hydra.run.dir` / `hydra.sweep.dir` must be caught here, at run start.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def _creatable(path: str, what: str) -> None:
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        sys.exit(f"error: cannot create the {what} {path}: {e.strerror}")


class Preflight(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _creatable(config.hydra.run.dir, "output directory (hydra.run.dir)")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _creatable(config.hydra.sweep.dir, "sweep directory (hydra.sweep.dir)")
