"""Gather a sweep's results: every job's metrics.json -> one pandas table, one row per job.

A job directory is one that Hydra made (it holds `.hydra/`) or that holds a metrics.json.
Jobs that never finished (no metrics.json), failed (error.json) or wrote a metrics.json we
cannot read are listed, never fatal: a report on 11 of 12 jobs is still worth reading.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..errors import LineageError
from ..results import isna
from ..text import printable
from ..utils import atomic_write, flatten, loads_json

log = logging.getLogger("lineage")

# Columns every table has, in this order (NaN where a job did not record the key). The rest
# of the metrics.json keys follow, sorted. `job` names the job by its directory relative to
# the PATH given; `job_dir` is absolute; `overrides` is the job's Hydra task overrides.
ID_COLUMNS = [
    "job",
    "modification",
    "ratio",
    "seed",
    "data",
    "model",
    "git_sha",
    "config_hash",
    "overrides",
    "job_dir",
]
METRIC_COLUMNS = [
    "parent.id",
    "parent.accuracy",
    "derived.id",
    "derived.accuracy",
    "derived.verdict.is_lineage",
    "derived.evidence.basin.barrier",
    "derived.evidence.basin.threshold",
    "derived.evidence.basin.route",
    "derived.evidence.closeness.score",
    "derived.evidence.closeness.ci_low",
    "derived.evidence.closeness.ci_high",
    "derived.evidence.closeness.match_rate",
    "derived.evidence.closeness.mean_distance",
    "derived.evidence.closeness.n_points",
    "independent.accuracy",
    "independent.evidence.basin.min",
    "independent.false_positives",
    "independent.evidence.closeness.max",
    "time.parent_s",
    "time.derive_s",
    "time.basin_s",
    "time.closeness_s",
    "time.total_s",
]
COLUMNS = ID_COLUMNS + METRIC_COLUMNS


@dataclass
class JobIssue:
    """A job that is not (fully) in the table: kind is missing | error | malformed | partial."""

    path: Path
    kind: str
    detail: str


@dataclass
class Collection:
    table: pd.DataFrame
    issues: list[JobIssue]
    roots: list[Path]
    job_dirs: list[Path] = field(default_factory=list)

    def issues_of(self, kind: str) -> list[JobIssue]:
        return [i for i in self.issues if i.kind == kind]


def collect(paths: Sequence[str | Path]) -> Collection:
    """Find every job under `paths` (sweep dirs, run dirs, or parents of either)."""
    if not paths:
        raise LineageError("no PATH given: pass a sweep or run directory")
    roots = []
    for p in paths:
        root = Path(p).expanduser().resolve()
        if not root.exists():
            raise LineageError(f"{p}: no such file or directory")
        roots.append(root.parent if root.is_file() else root)
    jobs: dict[Path, Path] = {}  # job dir -> the root it was found under (first wins)
    for root in roots:
        for d in _job_dirs(root):
            jobs.setdefault(d, root)
    if not jobs:
        raise LineageError(
            f"no metrics.json and no Hydra job directory (.hydra/) under "
            f"{', '.join(map(str, roots))}"
        )
    rows, issues = [], []
    for d in sorted(jobs):
        row, issue = _read_job(d)
        if issue is not None:
            issues.append(issue)
            log.warning("%s: %s (%s)", issue.kind, printable(issue.path), printable(issue.detail))
        if row is not None:
            row["job"] = _job_name(d, jobs[d], several=len(roots) > 1)
            rows.append(row)
    table = _to_table(rows)
    issues += _partial(table)
    return Collection(table, issues, roots, sorted(jobs))


def _job_dirs(root: Path) -> Iterable[Path]:
    found = {m.parent for m in root.rglob("metrics.json") if m.is_file()}
    found |= {h.parent for h in root.rglob(".hydra") if h.is_dir()}
    if (root / "metrics.json").is_file() or (root / ".hydra").is_dir():
        found.add(root)
    return found


def _job_name(d: Path, root: Path, several: bool) -> str:
    rel = d.relative_to(root).as_posix()
    name = d.name if rel == "." else rel
    return f"{root.name}/{name}" if several else name


def _read_job(d: Path) -> tuple[dict[str, Any] | None, JobIssue | None]:
    mpath, epath = d / "metrics.json", d / "error.json"
    if not mpath.exists():
        if epath.exists():
            return None, JobIssue(d, "error", _error_message(epath))
        return None, JobIssue(d, "missing", "no metrics.json (not run yet, running, or killed)")
    try:
        raw = loads_json(mpath.read_bytes())
    except (OSError, ValueError) as e:  # binary, truncated, or nested too deep
        return None, JobIssue(mpath, "malformed", f"unreadable JSON: {printable(e)}")
    if not isinstance(raw, dict):
        return None, JobIssue(
            mpath, "malformed", f"top level is a {type(raw).__name__}, not a JSON object"
        )
    row = {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in flatten(raw).items()}
    cfg = job_config(d) or {}
    # Older metrics.json files lack the identity keys; the job's own config has them.
    for key, path in (
        ("modification", "modification.name"),
        ("ratio", "ratio"),
        ("seed", "seed"),
        ("data", "data.name"),
        ("model", "model.name"),
    ):
        if row.get(key) is None:
            row[key] = _get(cfg, path)
    row["overrides"] = ",".join(read_overrides(d))
    row["job_dir"] = str(d)
    return row, None


def _error_message(path: Path) -> str:
    try:
        err = loads_json(path.read_bytes())
        return printable(err.get("error", err) if isinstance(err, dict) else err)
    except (OSError, ValueError) as e:
        return f"error.json unreadable: {printable(e)}"


def _to_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    table = pd.DataFrame(rows, columns=COLUMNS + extra)
    if table.empty:
        return table
    table["_ratio"] = pd.to_numeric(table["ratio"], errors="coerce")
    table["_seed"] = pd.to_numeric(table["seed"], errors="coerce")
    table = table.sort_values(["modification", "_ratio", "_seed", "job"], na_position="last")
    # copy(): one block per dtype (built from records, the table held one per column, and
    # pandas warns on every later column added to such a frame)
    return table.drop(columns=["_ratio", "_seed"]).reset_index(drop=True).copy()


def _partial(table: pd.DataFrame) -> list[JobIssue]:
    """Rows missing contract keys that other jobs of the sweep do have."""
    if table.empty:
        return []
    present = [c for c in METRIC_COLUMNS if table[c].notna().any()]
    out = []
    for _, row in table.iterrows():
        lacks = [c for c in present if isna(row[c])]
        if lacks:
            shown = ", ".join(lacks[:6]) + (f" (+{len(lacks) - 6} more)" if len(lacks) > 6 else "")
            out.append(JobIssue(Path(row["job_dir"]), "partial", f"lacks {shown}"))
    return out


def save_table(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """metrics.csv always; metrics.parquet too when pyarrow imports and can type the table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [atomic_write(out_dir / "metrics.csv", table.to_csv(index=False))]
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return written
    try:
        import io

        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        written.append(atomic_write(out_dir / "metrics.parquet", buf.getvalue()))
    except Exception as e:  # mixed-type columns are legal in JSON, not always in Parquet
        log.warning("metrics.parquet not written: %s", e)
    return written


# --- a job's config, overrides, and the sweep command --------------------------------------


def read_overrides(d: Path) -> list[str]:
    try:
        ov = yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError, RecursionError):
        return []
    return [str(o) for o in ov] if isinstance(ov, list) else []


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, RecursionError):
        return None


def job_config(d: Path) -> dict[str, Any] | None:
    """The job's composed config, resolved where possible.

    config.json (written by the pipeline) is already resolved. Otherwise `.hydra/config.yaml`
    still holds `${hydra:...}` interpolations, which only resolve inside a Hydra app; we
    substitute them from the job's own hydra.yaml and let OmegaConf resolve the rest."""
    cj = d / "config.json"
    if cj.is_file():
        try:
            cfg = loads_json(cj.read_bytes())
            if isinstance(cfg, dict):
                return cfg
        except (OSError, ValueError):
            pass
    path = d / ".hydra" / "config.yaml"
    try:
        text = path.read_text()
    except OSError:
        return None
    hydra = (_yaml(d / ".hydra" / "hydra.yaml") or {}).get("hydra", {})

    def sub(m: re.Match[str]) -> str:
        v = _get(hydra, m.group(1))
        return m.group(0) if v is None else str(v)

    try:
        from omegaconf import OmegaConf

        conf = OmegaConf.create(re.sub(r"\$\{hydra:([\w.]+)\}", sub, text))
        out: Any = OmegaConf.to_container(conf, resolve=True)
    except Exception:  # an interpolation we cannot resolve: the raw values still help
        out = _yaml(path)
    return {str(k): v for k, v in out.items()} if isinstance(out, dict) else None


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


@dataclass
class SweepInfo:
    config_job: str | None  # which job's config is shown
    config_yaml: str | None
    git_shas: list[str]
    commands: list[str]  # one per sweep directory (or per single run)
    reconstructed: bool  # True when no multirun.yaml was found


def sweep_info(c: Collection) -> SweepInfo:
    done = [Path(p) for p in c.table["job_dir"]] if not c.table.empty else []
    unfinished = [i.path for i in c.issues if i.kind in ("missing", "error")]
    dirs = sorted({d for d in done + unfinished if (d / ".hydra").is_dir()})
    config_job, config_yaml = None, None
    for d in sorted(done) + sorted(unfinished):  # prefer a job that finished
        try:
            config_yaml = (d / ".hydra" / "config.yaml").read_text()
            config_job = d.name
            break
        except OSError:
            continue
    shas = sorted({str(s) for s in c.table.get("git_sha", pd.Series(dtype=object)).dropna()})
    commands, reconstructed = [], False
    for parent, group in _by_parent(dirs).items():
        multirun = _yaml(parent / "multirun.yaml")
        if isinstance(multirun, dict):
            ov = _get(multirun, "hydra.overrides") or {}
            commands.append(_command(True, ov.get("hydra") or [], ov.get("task") or []))
            continue
        reconstructed = True
        commands.append(_reconstruct(group))
    return SweepInfo(config_job, config_yaml, shas, commands, reconstructed)


def _by_parent(dirs: list[Path]) -> dict[Path, list[Path]]:
    out: dict[Path, list[Path]] = {}
    for d in dirs:
        out.setdefault(d.parent, []).append(d)
    return out


def _command(multirun: bool, hydra_ov: list[str], task: list[str]) -> str:
    hydra_ov = [o for o in hydra_ov if not str(o).startswith("hydra.mode=")]
    args = ["python", "run.py"] + (["-m"] if multirun else []) + [*task, *hydra_ov]
    return " ".join(shlex.quote(str(a)) for a in args)


def _reconstruct(jobs: list[Path]) -> str:
    """No multirun.yaml: rebuild `key=v1,v2` sweeps from the jobs' own overrides."""
    values: dict[str, list[str]] = {}
    hydra_ov: list[str] = []
    multirun = len(jobs) > 1
    for d in jobs:
        hydra = (_yaml(d / ".hydra" / "hydra.yaml") or {}).get("hydra", {})
        multirun |= hydra.get("mode") == "MULTIRUN"
        for o in _get(hydra, "overrides.hydra") or []:
            if o not in hydra_ov:
                hydra_ov.append(o)
        for o in read_overrides(d):
            k, _, v = o.partition("=")
            vs = values.setdefault(k, [])
            if v not in vs:
                vs.append(v)
    task = [f"{k}={','.join(vs)}" for k, vs in values.items()]
    return _command(multirun, hydra_ov, task)
