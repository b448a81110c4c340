"""The report's sections, in order: each one figures (lineage.report.figures) and/or
tables, or a note saying why it was skipped. A sweep that lacks some metrics still gets
every other section.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..evaluate.evidence import names
from ..results import confusion, detection_auc, determination_table, pairs
from ..text import plain_figure_text, printable
from .collect import Collection, SweepInfo, job_config, sweep_info
from .evidence import evidence_section
from .figures import (
    Skip,
    _need,
    _numeric,
    accuracy_bar_figure,
    accuracy_figure,
    barrier_figure,
    closeness_figure,
    confusion_figure,
    roc_figure,
    timing_by_modification,
    timing_table,
)

log = logging.getLogger("lineage")


@dataclass
class Section:
    key: str
    title: str
    text: str = ""
    figures: list[tuple[Path, str]] = field(default_factory=list)  # (png, caption)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)
    code: list[tuple[str, str]] = field(default_factory=list)  # (caption, text)
    notes: list[str] = field(default_factory=list)  # why something is absent


# --- decision planes -----------------------------------------------------------------------


def _model_path(row: pd.Series, prefix: str, cfg: dict[str, Any]) -> Path:
    """The model file a job used: `<prefix>.path` (relative to the job dir if relative), or
    the zoo's file for `<prefix>.id` when the path was not recorded."""
    job_dir = Path(row["job_dir"])
    p = row.get(prefix + ".path")
    if isinstance(p, str) and p:
        return Path(p) if Path(p).is_absolute() else job_dir / p
    mid, zoo = row.get(prefix + ".id"), (cfg.get("paths") or {}).get("zoo")
    if isinstance(mid, str) and zoo:
        return Path(zoo) / "models" / f"{mid}.safetensors"
    raise Skip(f"{row['job']} recorded neither {prefix}.path nor a zoo id for it")


def decision_plane_section(t: pd.DataFrame, out_dir: Path, section: Section) -> None:
    """Parent, one derived model per modification (its largest ratio) and one independent
    reference, all from the first seed, on the plane through three test points."""
    try:
        from .. import plots

        draw: Callable[..., Any] = plots.decision_plane
    except (ImportError, AttributeError) as e:
        raise Skip(f"lineage.plots.decision_plane is not available ({e})") from None
    _need(t, "parent.id")
    seeds = _numeric(t, "seed")
    rows = t[seeds == seeds.min()] if seeds.notna().any() else t
    first = rows.iloc[0]
    cfg = job_config(Path(first["job_dir"])) or {}
    if "data" not in cfg:
        raise Skip(f"{first['job']}: no readable config for its data")
    from .. import models
    from ..data import datamodule_from_config
    from ..errors import LineageError

    wanted = [("parent", first, "parent")]
    r = rows.assign(_r=_numeric(rows, "ratio")).sort_values("_r")
    for mod, g in r.groupby(r["modification"].astype(object).fillna("?"), sort=True):
        last = g.iloc[-1]
        wanted.append((printable(f"{mod} ratio={last['ratio']}"), last, "derived"))
    wanted.append(("independent", first, "independent.0"))
    loaded: dict[str, Any] = {}
    for label, row, prefix in wanted:
        try:
            path = _model_path(row, prefix, job_config(Path(row["job_dir"])) or cfg)
            loaded[label] = models.load(path)[0]
        except (Skip, LineageError, OSError) as e:
            section.notes.append(f"{label}: model not loaded ({e})")
    if "parent" not in loaded:
        raise Skip("the parent model could not be loaded")
    try:
        dm = datamodule_from_config(cfg["data"])
    except (LineageError, OSError, KeyError) as e:
        raise Skip(f"data not loaded ({e})") from None
    xs, seen = [], set()
    for x, y in zip(dm.test.x, dm.test.y):
        if int(y) not in seen:
            seen.add(int(y))
            xs.append(x)
        if len(xs) == 3:
            break
    if len(xs) < 3:
        raise Skip("the test split has fewer than three classes")
    path = out_dir / "decision_plane.png"
    draw(loaded, xs[0], xs[1], xs[2], path, num_classes=dm.num_classes)
    if not path.is_file() or path.stat().st_size == 0:
        raise Skip("lineage.plots.decision_plane wrote no PNG")
    section.figures.append(
        (
            path,
            "Decision regions on the plane through three test points "
            "(one per class): " + ", ".join(loaded),
        )
    )


# --- all sections --------------------------------------------------------------------------


def _issues_table(c: Collection) -> pd.DataFrame:
    base = c.roots[0] if len(c.roots) == 1 else None

    def rel(p: Path) -> str:
        try:
            return p.relative_to(base).as_posix() if base else str(p)
        except ValueError:
            return str(p)

    return pd.DataFrame(
        [{"kind": i.kind, "path": rel(i.path), "detail": i.detail} for i in c.issues],
        columns=["kind", "path", "detail"],
    )


JOB_COLUMNS = {
    "job": "job",
    "modification": "modification",
    "ratio": "ratio",
    "seed": "seed",
    "derived.accuracy": "accuracy",
    "derived.verdict.is_lineage": "lineage?",
    "derived.evidence.basin.barrier": "barrier",
    "derived.evidence.basin.threshold": "τ",
    "derived.verdict.p_value": "p",
    "derived.evidence.closeness.score": "closeness",
    "derived.evidence.closeness.ci_low": "CI low",
    "derived.evidence.closeness.ci_high": "CI high",
    "time.total_s": "total s",
}


def make_sections(c: Collection, out_dir: Path, decision_planes: bool = True) -> list[Section]:
    """Draw every figure into `out_dir` and return the report's sections in order.
    Labels come from the sweep's metrics (modification names, job names), so they are
    drawn as plain text (no mathtext)."""
    with plain_figure_text():
        return _make_sections(c, out_dir, decision_planes)


def _add_figure(s: Section, make: Callable[[], Path], caption: str) -> None:
    """`make`'s figure in `s`, or the reason it was skipped as a note."""
    try:
        s.figures.append((make(), caption))
    except Skip as e:
        s.notes.append(f"skipped: {e}")


def _make_sections(c: Collection, out_dir: Path, decision_planes: bool) -> list[Section]:
    out_dir.mkdir(parents=True, exist_ok=True)
    t, p = c.table, pairs(c.table)
    cols = [k for k in JOB_COLUMNS if k in t.columns and t[k].notna().any()]
    jobs = Section(
        "jobs",
        "Jobs",
        f"{len(t)} job(s) with results; the full table is metrics.csv.",
        tables=[("One row per job", t[cols].rename(columns=JOB_COLUMNS))],
    )
    if c.issues:
        jobs.tables.append(("Missing, failed, malformed or partial runs", _issues_table(c)))
    sections = [jobs]

    def figure(key: str, title: str, text: str, fn: Callable[[], Path], caption: str) -> None:
        s = Section(key, title, text)
        _add_figure(s, fn, caption)
        sections.append(s)

    figure(
        "closeness",
        "Closeness vs ratio",
        "Lineage closeness of each derived model to its parent; one line per modification.",
        lambda: closeness_figure(t, out_dir),
        "Closeness score vs ratio",
    )
    figure(
        "barrier",
        "Barrier vs ratio",
        "Loss barrier on the linear path parent → derived, with the paper's threshold τ "
        "(recorded; the verdict is the p-value test of the evidence section).",
        lambda: barrier_figure(t, out_dir),
        "Barrier vs ratio with the threshold",
    )

    det = Section(
        "determination",
        "Determination accuracy",
        "Every derived model is truly lineage; every independent reference is not.",
    )
    try:
        table = determination_table(t, p)
        det.tables.append(("Judged correctly, per modification", table))
        det.figures.append((accuracy_bar_figure(table, out_dir), "Accuracy per modification"))
    except Skip as e:
        det.notes.append(f"accuracy skipped: {e}")
    try:
        cm = confusion(p)
        det.tables.append(("Confusion matrix (pairs)", cm.reset_index(names="")))
        det.figures.append((confusion_figure(cm, out_dir), "Confusion matrix"))
    except Skip as e:
        det.notes.append(f"confusion matrix skipped: {e}")
    sections.append(det)

    evidence = Section(
        "evidence",
        "Evidence behind each verdict",
        f"Each kind of evidence ({', '.join(names())}) as a p-value: how "
        "unusual the suspect's value would be for an independent model, from the parent's "
        "references; the verdict says lineage when the Bonferroni-combined p is at most α. "
        "Below, the loss along each suspect's interpolation path (red) and the references' "
        "(grey).",
    )
    evidence_section(t, out_dir, evidence)
    sections.append(evidence)

    roc = Section(
        "roc",
        "ROC and AUC",
        "Closeness score and -barrier as lineage detectors over every pair: each "
        "job's derived model (positive) and each independent reference (negative, "
        "counted once per parent).",
    )
    aucs, curves = detection_auc(p)
    roc.tables.append(
        (
            "AUC per detector",
            aucs.assign(auc=[("n/a" if math.isnan(a) else f"{a:.6f}") for a in aucs["auc"]]),
        )
    )
    _add_figure(roc, lambda: roc_figure(aucs, curves, out_dir), "ROC curves")
    sections.append(roc)

    figure(
        "accuracy",
        "Derived accuracy vs ratio",
        "Test accuracy after modification.",
        lambda: accuracy_figure(t, out_dir),
        "Derived accuracy vs ratio",
    )

    timing = Section("timing", "Time per stage", "Seconds per job and stage.")
    try:
        stages = timing_table(t)
        timing.tables.append(("Seconds over all jobs", stages))
        timing.tables.append(
            ("Mean seconds per modification", timing_by_modification(t, list(stages["stage"])))
        )
    except Skip as e:
        timing.notes.append(f"skipped: {e}")
    sections.append(timing)

    planes = Section(
        "decision_plane",
        "Decision planes",
        "Parent, one derived model per modification and an independent model.",
    )
    if decision_planes:
        try:
            decision_plane_section(t, out_dir, planes)
        except Skip as e:
            planes.notes.append(f"skipped: {e}")
        except Exception as e:  # a plotting bug must not cost the rest of the report
            log.warning("decision planes failed: %r", e)
            planes.notes.append(f"skipped: decision_plane failed ({type(e).__name__}: {e})")
    else:
        planes.notes.append("skipped: turned off (--no-decision-planes)")
    sections.append(planes)
    sections.append(provenance_section(sweep_info(c)))
    return sections


def provenance_section(info: SweepInfo) -> Section:
    s = Section("provenance", "Config, code and command")
    s.text = "git SHA: " + (", ".join(info.git_shas) if info.git_shas else "unknown")
    if len(info.git_shas) > 1:
        s.notes.append("the jobs ran from different commits")
    if info.commands:
        how = " (reconstructed from the jobs' overrides)" if info.reconstructed else ""
        s.code.append((f"Sweep command{how}", "\n".join(info.commands)))
    else:
        s.notes.append("no Hydra overrides found: sweep command unknown")
    if info.config_yaml:
        s.code.append(
            (f"Composed config (.hydra/config.yaml of {info.config_job})", info.config_yaml)
        )
    else:
        s.notes.append("no .hydra/config.yaml found")
    return s
