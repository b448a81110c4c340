"""A sweep's jobs from the launching process: which are already done (skipped before they
are submitted), what became of those that ended without a result (cancelled, out of
memory, timed out: the scheduler's word), and the one summary table the sweep ends with.

The launchers (hydra_plugins/lineage_launchers) fill `planned` and `ended` while they run;
the summary (hydra_callbacks.SweepSummary) reads them in the same process.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("lineage")

planned: list[str] = []  # every job folder name of the sweep, in launch order
ended: dict[str, str] = {}  # job folder name -> what ended it without a result


def plan(
    hydra_context: Any, config: DictConfig, job_overrides: Sequence[Sequence[str]]
) -> list[tuple[int, list[str]]]:
    """(index, overrides) of the jobs still to run. A job whose folder holds its config's
    metrics.json is skipped here, before it costs a process or an allocation; `force=true`
    skips none. A job whose config does not resolve here runs, to record why it fails. In
    a sweep with no results yet nothing is composed here: it could skip nothing."""
    jobs = [(i, list(o)) for i, o in enumerate(job_overrides)]
    if not any(Path(str(config.hydra.sweep.dir)).glob("*/metrics.json")):
        return jobs
    todo = []
    for i, overrides in jobs:
        name, job = _compose(hydra_context, config, overrides)
        if done(Path(str(config.hydra.sweep.dir)) / name, job):
            log.info("\t#%d : %s (done: skipped)", i, name)
        else:
            todo.append((i, overrides))
    return todo


def _compose(hydra_context: Any, config: DictConfig, overrides: list[str]) -> tuple[str, Any]:
    """The job's folder name (hydra.sweep.subdir) and config, as its launcher will make it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton

    state = Singleton.get_state()  # HydraConfig is set for the job; the sweep's comes back
    try:
        job = hydra_context.config_loader.load_sweep_config(config, overrides)
        HydraConfig.instance().set_config(job)
        name = str(OmegaConf.select(job, "hydra.sweep.subdir"))
    finally:
        Singleton.set_state(state)
    planned.append(name)
    return name, job


def record_end(hydra_context: Any, config: DictConfig, overrides: list[str], what: str) -> str:
    """Remember for the summary what ended a job without a result; its folder name."""
    name = _compose(hydra_context, config, overrides)[0]
    if not (Path(str(config.hydra.sweep.dir)) / name / "metrics.json").is_file():
        ended.setdefault(name, what)
        log.error("job %s ended without a result: %s", name, what)
    return name


def done(folder: Path, job: DictConfig) -> bool:
    if not (folder / "metrics.json").is_file():
        return False
    from .pipeline import config_hash, previous_result, to_container

    try:
        with open_dict(job):
            del job["hydra"]
        cfg = to_container(job)
    except Exception:  # noqa: BLE001  (a bad value: the job itself reports it)
        return False
    if cfg.get("force"):
        return False
    return previous_result(folder / "metrics.json", config_hash(cfg)) is not None


# The scheduler's final states, as the summary says them.
STATES = {
    "CANCELLED": "cancelled",
    "TIMEOUT": "timed out",
    "OUT_OF_MEMORY": "out of memory",
    "NODE_FAIL": "node failed",
    "PREEMPTED": "preempted",
    "BOOT_FAIL": "node failed",
    "DEADLINE": "timed out",
}


def ended_as(state: str) -> str:
    word = state.split()[0].upper() if state.strip() else "UNKNOWN"
    return STATES.get(word, "killed" if word != "FAILED" else "failed")


def job_dirs(sweep: Path) -> list[Path]:
    """Every job folder of a sweep: those its launcher planned, and those Hydra wrote its
    config into (a sweep launched before, or by another launcher)."""
    found = {p.parent.parent for p in sweep.glob("*/.hydra/config.yaml")}
    found |= {sweep / name for name in planned}
    return sorted(found)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return out if isinstance(out, dict) else None


def job_row(d: Path, started: float) -> dict[str, Any]:
    from .report.console import verdict_word

    metrics, error = _read(d / "metrics.json"), _read(d / "error.json")
    if metrics is not None:
        fresh = (d / "metrics.json").stat().st_mtime >= started
        return {
            "job": d.name,
            "status": "ok" if fresh else "skipped",
            "verdict": verdict_word(metrics, "derived.") or "-",
            "p": metrics.get("derived.verdict.p_value"),
            "seconds": metrics.get("time.total_s"),
        }
    if error is not None:
        return {"job": d.name, "status": "failed", "verdict": str(error.get("error", ""))}
    if d.name in ended:
        return {"job": d.name, "status": "missing", "verdict": ended[d.name]}
    return {"job": d.name, "status": "missing", "verdict": "no result"}


def format_rows(rows: list[dict[str, Any]], sweep: Path) -> str:
    from .report.console import text_table

    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "skipped", "failed")}
    head = f"sweep {sweep}: {len(rows)} jobs, " + ", ".join(f"{n} {s}" for s, n in counts.items())
    missing = sum(r["status"] == "missing" for r in rows)
    head += f", {missing} missing" if missing else ""
    cols = ("job", "status", "verdict", "p", "seconds")
    return head + "\n" + text_table(cols, [[r.get(c) for c in cols] for r in rows])


def summarize(sweep: Path, started: float) -> int:
    """Print the sweep's table; the exit status: 0 when every job has its results, else 1
    with one line naming the jobs that failed or did not finish (a rerun runs just them)."""
    rows = [job_row(d, started) for d in job_dirs(sweep)]
    print(format_rows(rows, sweep), flush=True)
    failed = [r["job"] for r in rows if r["status"] == "failed"]
    missing = [f"{r['job']} ({r['verdict']})" for r in rows if r["status"] == "missing"]
    parts = [f"{len(failed)} of {len(rows)} jobs failed: {', '.join(failed)}"] if failed else []
    if missing:
        n = f"{len(missing)} of {len(rows)} jobs" if not failed else str(len(missing))
        parts.append(f"{n} did not finish: {', '.join(missing)}")
    if not parts:
        return 0
    print("error: " + "; ".join(parts), file=sys.stderr)
    return 1
