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
from ..evaluate.verdict import answer
from ..results import confusion, detection_auc, determination_table, pairs
from ..text import plain_figure_text, printable
from . import recovered
from .collect import Collection, SweepInfo, job_config, sweep_info
from .evidence import evidence_section
from .explain import Explanation, explanations, kind_names
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
from .graph import graph_figure, lineage_edges
from .links import job_links

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
    explanations: list[Explanation] = field(default_factory=list)  # one per judged job


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
    if not isinstance(cfg["data"], dict) or cfg["data"].get("_target_"):
        # A results folder may come from anyone: what its config names is never imported.
        raise Skip(f"{first['job']}: its data is a `_target_`, which a report never imports")
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
    "derived.verdict.is_lineage": "verdict",
    "derived.verdict.p_value": "p",
    "derived.verdict.decided_by": "decided by",
    "time.total_s": "total s",
}


def jobs_table(t: pd.DataFrame, out_dir: Path) -> pd.DataFrame:
    """A row per job, narrow enough for the page (each kind's values are in the evidence
    section), with links to the job's files."""
    cols = [k for k in JOB_COLUMNS if k in t.columns and t[k].notna().any()]
    table = t[cols].rename(columns=JOB_COLUMNS)
    if "verdict" in table:  # undetermined is its own answer, never "no"
        table["verdict"] = [answer(v) for v in table["verdict"]]
    table["files"] = pd.Series([job_links(Path(d), out_dir) for d in t["job_dir"]], dtype=object)
    return table


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
    jobs = Section(
        "jobs",
        "Jobs",
        f"{len(t)} job(s) with results; the full table is metrics.csv.",
        tables=[("One row per job", jobs_table(t, out_dir))],
    )
    if c.issues:
        jobs.tables.append(("Missing, failed, malformed or partial runs", _issues_table(c)))
    exps = explanations(t)
    sections = [jobs, verdicts_section(t, exps, out_dir), lineage_section(t, out_dir)]
    sections += [tree_section(d, out_dir, i) for i, d in enumerate(recovered.folders(c.roots))]

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
    evidence_section(t, out_dir, evidence, exps)
    sections.append(evidence)

    roc = Section("roc", "ROC and AUC", ROC_TEXT)
    aucs, curves = detection_auc(p)
    roc.tables.append(
        (
            "AUC per detector",
            aucs.assign(auc=[("n/a" if math.isnan(a) else f"{a:.6f}") for a in aucs["auc"]]),
        )
    )
    _add_figure(roc, lambda: roc_figure(aucs, curves, out_dir), "ROC curves")
    if len(usage := evidence_usage(t)):
        roc.tables.append(("Each evidence's p-values over the sweep's jobs", usage))
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


ROC_TEXT = (
    "Closeness score and -barrier as lineage detectors over every pair: each job's derived "
    "model (positive) and each independent reference (negative, counted once per parent). "
    "An AUC and a p-value answer different questions. The AUC ranks every pair of the "
    "sweep against every other, across jobs and parents: it is 1.0 when every derived "
    "model scores above every reference, however small the gap. The p-value measures one "
    "suspect against its own parent's few references only (the prediction interval of "
    "lineage.evaluate.verdict): when a suspect's value sits inside those references' "
    "range, or level with references that share one value (a floor of the evidence's "
    "scale), its p cannot fall below alpha whatever the ranking says, so that evidence "
    "never decides. The table below shows how small each evidence's p got, and the "
    "evidence section draws each suspect against its references."
)


def evidence_usage(t: pd.DataFrame) -> pd.DataFrame:
    """Per kind of evidence: over the jobs, how small its p got and how often it decided."""
    rows = []
    decided = t.get("derived.verdict.decided_by", pd.Series(dtype=object))
    for name in kind_names(t.columns):
        if f"derived.verdict.p.{name}" not in t.columns:
            continue
        ps = pd.to_numeric(t[f"derived.verdict.p.{name}"], errors="coerce").dropna()
        says = t.get(f"derived.verdict.says.{name}", pd.Series(dtype=object))
        if ps.empty:
            continue
        rows.append(
            {
                "evidence": name,
                "jobs with a p": len(ps),
                "smallest p": ps.min(),
                "median p": ps.median(),
                "alone says lineage": int(sum(v is True or v == 1 for v in says.dropna())),
                "decided": int((decided == name).sum()),
            }
        )
    return pd.DataFrame(rows)


def verdicts_section(t: pd.DataFrame, exps: list[Explanation], out_dir: Path) -> Section:
    s = Section(
        "verdicts",
        "Why each verdict",
        "Each job's verdict with the evidence behind it, from its metrics.json: the combined "
        "(Bonferroni) p against alpha, which evidence decided, and each kind's p-value with "
        "the suspect's value among its references'. In each strip the grey bar is the "
        "references' range (dots: each reference), the red diamond the suspect; point at a "
        "mark for its model and value.",
    )
    dirs = dict(zip(t["job"].map(printable), t["job_dir"]))
    for e in exps:
        if e.job in dirs:
            e.links = job_links(Path(dirs[e.job]), out_dir)
    s.explanations = exps
    if not exps:
        s.notes.append("skipped: no job recorded a verdict's p-value (older metrics.json)")
    return s


def lineage_section(t: pd.DataFrame, out_dir: Path) -> Section:
    s = Section("lineage", "Lineage records")
    try:
        edges, source = lineage_edges(t)
    except Skip as e:
        s.notes.append(f"skipped: {e}")
        return s
    s.text = f"{len(edges)} parent -> derived edge(s), from {source}."
    _add_figure(s, lambda: graph_figure(edges, out_dir), "The sweep's models and their lineage")
    s.tables.append(("Lineage edges", edges))
    return s


def tree_section(folder: Path, out_dir: Path, i: int) -> Section:
    s = Section(f"tree{i}", "Recovered lineage tree")
    try:
        s.text, png, edges = recovered.parts(folder, out_dir, i)
    except Skip as e:
        s.notes.append(f"skipped: {e}")
        return s
    s.figures.append((png, "The lineage tree that `lineage tree` recovered"))
    s.tables.append(("Recovered edges", edges))
    return s


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
