"""Hydra callbacks: launch-time checks that fail in one clear line instead of a traceback,
and the one summary table a sweep ends with.

Hydra creates the output folder itself, before our job code runs, so an unwritable
`hydra.run.dir` / `hydra.sweep.dir` must be caught here, at run start.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .text import has_control, printable

# Folders no run may write into: the root of the file system and its system folders
# (`hydra.run.dir=/` wrote /metrics.json), and anything under the kernel's pseudo file
# systems or the system's own trees.
SYSTEM_ROOTS = ("/", "/bin", "/boot", "/home", "/lib", "/lib64", "/media", "/mnt", "/opt",
                "/root", "/run", "/sbin", "/srv", "/usr", "/var")  # fmt: skip
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/boot", "/usr", "/lib")
# Room for what Hydra writes before the job can check anything (.hydra/, the job's log).
HYDRA_BYTES = 1 << 16


def _refuse(message: str) -> None:
    print(f"error: {printable(message)}", file=sys.stderr)
    sys.exit(2)


def _usable(path: Path, what: str, need_bytes: int = 0) -> None:
    """`path` is no system folder, and can be created and written (`need_bytes` of room),
    checked before Hydra creates it and opens its log there."""
    from .errors import LineageError
    from .utils import check_writable

    full = Path(os.path.abspath(path))
    real = Path(os.path.realpath(full))
    for p in {str(full), str(real)}:
        inside = [t for t in SYSTEM_TREES if p == t or p.startswith(t + "/")]
        if p in SYSTEM_ROOTS or inside:
            _refuse(f"the {what} {full} is a system folder; choose a folder of your own")
    try:
        check_writable(full, need_bytes, f"the {what}")
    except LineageError as e:
        _refuse(str(e))


def _plain_overrides(config: DictConfig) -> None:
    """No unknown top-level key (a typo), and no control or format character in the
    command line's text, which names folders and runs (an ANSI escape, a bidi override
    that shows a name reversed): refused before any folder is made from it."""
    for o in OmegaConf.select(config, "hydra.overrides.task") or []:
        if has_control(str(o)):
            _refuse(f"the override {printable(o)} holds a control or format character")
    from .config import check_root_keys
    from .errors import LineageError

    try:
        plugins = OmegaConf.select(config, "plugins")
        check_root_keys(config.keys(), list(plugins) if plugins is not None else ())
    except LineageError as e:
        _refuse(str(e))


def _resolve(config: DictConfig, key: str) -> str:
    """`hydra.<key>` resolved. Callbacks run before Hydra registers the config that the
    `${hydra:...}` resolver reads (it does so per job), so register it here first."""
    HydraConfig.instance().set_config(config)
    return str(OmegaConf.select(config, f"hydra.{key}"))


class Preflight(Callback):
    """Everything a run needs writable, checked before any data is read or model trained."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _plain_overrides(config)
        run_dir = Path(_resolve(config, "run.dir"))
        _usable(run_dir, "output directory (hydra.run.dir)", HYDRA_BYTES)
        self._zoo(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _plain_overrides(config)
        sweep = Path(_resolve(config, "sweep.dir"))
        _usable(sweep, "sweep directory (hydra.sweep.dir)", HYDRA_BYTES)
        self._zoo(config)

    @staticmethod
    def _zoo(config: DictConfig) -> None:
        zoo = OmegaConf.select(config, "paths.zoo")
        if zoo is not None:
            _usable(Path(str(zoo)), "zoo")


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
