"""`lineage run` (and its shim `run.py`): one job, or with `-m` a sweep of jobs, composed by
Hydra from the configs shipped in this package (lineage/conf, found as pkg://lineage.conf,
so a non-editable install has them too).

A single run prints its summary table. In a sweep the jobs run side by side (joblib,
submitit), so their tables would interleave: each job's table goes to its summary.txt,
and the sweep ends with one summary of all jobs (lineage.hydra_callbacks.SweepSummary).
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .config import register_schemas

# Our launcher YAMLs (hydra/launcher/joblib, ...) share the plugin's names on purpose, so
# `hydra/launcher=joblib` reads as documented and the plugin's schema checks our keys;
# Hydra 1.3 warns that this pairing is deprecated. The warning is about our own files.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")

register_schemas()
log = logging.getLogger("lineage")


def job(cfg: DictConfig) -> None:
    from .errors import LineageError
    from .pipeline import run, to_container
    from .report.console import summary_table
    from .utils import atomic_write, write_json

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        metrics = run(
            to_container(cfg),
            out_dir,
            run_name=hc.job.override_dirname or "default",
            group=Path(hc.sweep.dir).name if multirun else None,
        )
    except LineageError as e:
        log.error("%s", e)
        if not multirun:
            sys.exit(f"error: {e}")
        # In a sweep one bad job must not kill the others: record why, move on.
        write_json(out_dir / "error.json", {"error": str(e), "overrides": list(hc.overrides.task)})
        return
    (out_dir / "error.json").unlink(missing_ok=True)  # a rerun that succeeds clears it
    if multirun:
        atomic_write(out_dir / "summary.txt", summary_table(metrics) + "\n")
    else:
        print(summary_table(metrics))


main = hydra.main(version_base="1.3", config_path="pkg://lineage.conf", config_name="config")(job)
