"""Hydra callbacks: launch-time checks that fail in one clear line instead of a traceback,
and the one summary table a sweep ends with.

Hydra creates the output folder itself, before our job code runs, so an unwritable
`hydra.run.dir` / `hydra.sweep.dir` must be caught here, at run start.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .text import printable


def _creatable(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: cannot create the {what} {printable(path)}: {e.strerror}", file=sys.stderr)
        sys.exit(2)


def _resolve(config: DictConfig, key: str) -> str:
    """`hydra.<key>` resolved. Callbacks run before Hydra registers the config that the
    `${hydra:...}` resolver reads (it does so per job), so register it here first."""
    HydraConfig.instance().set_config(config)
    return str(OmegaConf.select(config, f"hydra.{key}"))


class Preflight(Callback):
    """Everything a run needs writable, checked before any data is read or model trained."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _creatable(Path(_resolve(config, "run.dir")), "output directory (hydra.run.dir)")
        self._zoo(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _creatable(Path(_resolve(config, "sweep.dir")), "sweep directory (hydra.sweep.dir)")
        self._zoo(config)

    @staticmethod
    def _zoo(config: DictConfig) -> None:
        zoo = OmegaConf.select(config, "paths.zoo")
        if zoo is not None:
            _creatable(Path(str(zoo)), "zoo")


class SweepSummary(Callback):
    """After a sweep, one table of its jobs: ok (ran now), skipped (its results were already
    there), failed (error.json says why) or missing (ended without a result: what ended it,
    when its launcher knows). The exit status is 1 unless every job has its results."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from . import sweep

        self.start = time.time()
        sweep.planned.clear()  # this sweep's jobs only, should a process run several
        sweep.ended.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from .sweep import summarize

        status = summarize(Path(_resolve(config, "sweep.dir")), getattr(self, "start", 0.0))
        if status:
            sys.exit(status)
