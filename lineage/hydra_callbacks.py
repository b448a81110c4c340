"""Hydra callbacks: launch-time checks that fail in one clear line instead of a traceback,
and the one summary table a sweep ends with.

Hydra creates the output folder itself, before our job code runs, so an unwritable
`hydra.run.dir` / `hydra.sweep.dir` must be caught here, at run start.
"""

from __future__ import annotations

import json
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
    there), failed (error.json says why) or missing (killed before it finished)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.start = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(_resolve(config, "sweep.dir"))
        rows = [job_row(d, getattr(self, "start", 0.0)) for d in job_dirs(sweep)]
        print(format_rows(rows, sweep), flush=True)
        failed = [r["job"] for r in rows if r["status"] == "failed"]
        if failed:  # the sweep's exit status says so (each job's error.json says why)
            print(f"error: {len(failed)} of {len(rows)} jobs failed: {', '.join(failed)}",
                  file=sys.stderr)  # fmt: skip
            sys.exit(1)


def job_dirs(sweep: Path) -> list[Path]:
    """Every job folder of a sweep: the ones Hydra wrote its config into."""
    return sorted(p.parent.parent for p in sweep.glob("*/.hydra/config.yaml"))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return out if isinstance(out, dict) else None


def job_row(d: Path, started: float) -> dict[str, Any]:
    metrics, error = _read(d / "metrics.json"), _read(d / "error.json")
    if metrics is not None:
        fresh = (d / "metrics.json").stat().st_mtime >= started
        verdict = metrics.get("derived.verdict.is_lineage")
        return {
            "job": d.name,
            "status": "ok" if fresh else "skipped",
            "verdict": "-" if verdict is None else "lineage" if verdict else "not lineage",
            "closeness": metrics.get("derived.evidence.closeness.score"),
            "seconds": metrics.get("time.total_s"),
        }
    if error is not None:
        return {"job": d.name, "status": "failed", "verdict": str(error.get("error", ""))}
    return {"job": d.name, "status": "missing", "verdict": "no result"}


def format_rows(rows: list[dict[str, Any]], sweep: Path) -> str:
    from .report.console import text_table

    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "skipped", "failed")}
    head = f"sweep {sweep}: {len(rows)} jobs, " + ", ".join(f"{n} {s}" for s, n in counts.items())
    cols = ("job", "status", "verdict", "closeness", "seconds")
    return head + "\n" + text_table(cols, [[r.get(c) for c in cols] for r in rows])
