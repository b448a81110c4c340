"""`lineage run` (and its shim `run.py`): one job, or with `-m` a sweep of jobs, composed by
Hydra from the configs shipped in this package (lineage/conf, found as pkg://lineage.conf,
so a non-editable install has them too).

A single run prints its summary table. In a sweep the jobs run side by side (joblib,
submitit), so their tables would interleave: each job's table goes to its summary.txt,
and the sweep ends with one summary of all jobs (lineage.hydra_callbacks.SweepSummary).

Exit status: 0 when every job finished; 2 with one `error: ...` line when a single run
is refused (bad input, unwritable output); 1 when a job of a sweep failed (each failed
job leaves error.json in its folder, and the others still run); 128 + N when signal N
(SIGTERM: 143) interrupted the work, which is then named on stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .config import register_schemas
from .interrupt import guard

# Our launcher YAMLs (hydra/launcher/joblib, ...) share the plugin's names on purpose, so
# `hydra/launcher=joblib` reads as documented and the plugin's schema checks our keys;
# Hydra 1.3 warns that this pairing is deprecated. The warning is about our own files.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")

register_schemas()
log = logging.getLogger("lineage")


def job(cfg: DictConfig) -> None:
    from .errors import LineageError
    from .interrupt import stage
    from .pipeline import run, to_container
    from .report.console import summary_table
    from .text import printable
    from .utils import atomic_write, write_json

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    name = hc.job.override_dirname or "default"
    try:
        with stage(f"running job {name}"):
            metrics = run(
                to_container(cfg),
                out_dir,
                run_name=name,
                group=Path(hc.sweep.dir).name if multirun else None,
                jobs_at_once=parallel_jobs(hc) if multirun else 1,
            )
    except Exception as e:
        if not multirun:
            if not isinstance(e, LineageError):
                raise  # a bug: its traceback is what a report needs
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        # In a sweep one bad job must not kill the others: record why and move on; the
        # sweep's summary then lists it, and the sweep exits 1 (SweepSummary).
        kind = "" if isinstance(e, LineageError) else f"{type(e).__name__}: "
        log.error("%s%s", kind, printable(e))
        error = {"error": f"{kind}{printable(e)}", "overrides": list(hc.overrides.task)}
        write_json(out_dir / "error.json", error)
        return
    (out_dir / "error.json").unlink(missing_ok=True)  # a rerun that succeeds clears it
    if multirun:
        atomic_write(out_dir / "summary.txt", summary_table(metrics) + "\n")
    else:
        print(summary_table(metrics))


def parallel_jobs(hc: Any) -> int:
    """How many jobs the sweep's launcher runs at once: joblib's n_jobs (-1: one per core),
    submitit's tasks (each asks for its own cpus_per_task, which is then its share)."""
    from .runtime import cores

    launcher: Any = OmegaConf.to_container(hc.launcher, resolve=False) or {}
    target = str(launcher.get("_target_", ""))
    if "Joblib" in target:
        n = int(launcher.get("n_jobs") or 1)
        return cores() if n < 0 else max(1, n)
    if "submitit" in target and launcher.get("cpus_per_task"):
        return max(1, cores() // int(launcher["cpus_per_task"]))
    return 1


_hydra_main = hydra.main(
    version_base="1.3", config_path="pkg://lineage.conf", config_name="config"
)(job)


@guard("lineage run")
def main() -> None:
    """Hydra's own command line, with its composition errors (an unknown group option, a
    value of the wrong type, a malformed override) as one `error:` line and exit 2, where
    Hydra would print a block and exit 1. Hydra reports an error itself unless
    HYDRA_FULL_ERROR is set; set, the exception reaches us."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _hydra_main()
    except (HydraException, OmegaConfBaseException) as e:
        print(f"error: {hydra_message(e)}", file=sys.stderr)
        sys.exit(2)
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def hydra_message(e: BaseException) -> str:
    """One line for a Hydra or OmegaConf error: `unknown data 'mnsit' (choose from: ...)`
    for a missing group option, else the error's first line and its cause's."""
    from hydra.errors import MissingConfigException

    from .text import shorten

    missing = getattr(e, "missing_cfg_file", None)
    options = getattr(e, "options", None)
    if isinstance(e, MissingConfigException) and missing and options:
        group, _, option = str(missing).rpartition("/")
        return shorten(f"unknown {group} {option!r} (choose from: {', '.join(options)})", 400)
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    cause = e.__cause__
    if cause is not None and str(cause).strip():
        first += ": " + str(cause).strip().splitlines()[0]
    return shorten(first, 400)
