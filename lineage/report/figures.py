"""The report's sections: each one a figure (PNG, matplotlib Agg) and/or tables, or a note
saying why it was skipped. A sweep that lacks some metrics still gets every other section.

Figures are drawn on `matplotlib.figure.Figure` objects (no pyplot state), at DPI 100 and
without tight bounding boxes, so each PNG has exactly the pixel size in FIGURE_SIZES.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..text import plain_figure_text, printable
from .collect import Collection, SweepInfo, job_config, pairs, sweep_info

log = logging.getLogger("lineage")

DPI = 100
# name -> (width, height) in pixels of the PNG written as <name>.png.
FIGURE_SIZES: dict[str, tuple[int, int]] = {
    "closeness_vs_ratio": (720, 450),
    "barrier_vs_ratio": (720, 450),
    "determination_accuracy": (720, 450),
    "confusion_matrix": (480, 420),
    "roc": (600, 500),
    "accuracy_vs_ratio": (720, 450),
}
TIME_STAGES = ["parent", "derive", "determination", "closeness", "total"]


@dataclass
class Section:
    key: str
    title: str
    text: str = ""
    figures: list[tuple[Path, str]] = field(default_factory=list)  # (png, caption)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)
    code: list[tuple[str, str]] = field(default_factory=list)  # (caption, text)
    notes: list[str] = field(default_factory=list)  # why something is absent


class Skip(Exception):
    """A section cannot be drawn from this sweep's metrics; the message says why."""


def _need(t: pd.DataFrame, *cols: str) -> None:
    absent = [c for c in cols if c not in t.columns or not t[c].notna().any()]
    if absent:
        raise Skip(f"no job recorded {', '.join(absent)}")


def _numeric(t: pd.DataFrame, col: str) -> pd.Series:
    if col not in t.columns:
        return pd.Series(np.nan, index=t.index)
    return pd.to_numeric(t[col], errors="coerce")


def _new_figure(name: str) -> Figure:
    w, h = FIGURE_SIZES[name]
    return Figure(figsize=(w / DPI, h / DPI), dpi=DPI, layout="constrained")


def _save(fig: Figure, out_dir: Path, name: str) -> Path:
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=DPI, format="png")
    return path


def by_ratio(t: pd.DataFrame, col: str) -> dict[str, pd.DataFrame]:
    """modification -> rows (ratio, mean, std, n) of `col` over seeds, ratio ascending."""
    d = pd.DataFrame(
        {
            "modification": t["modification"].astype(object).fillna("?"),
            "ratio": _numeric(t, "ratio"),
            "v": _numeric(t, col),
        }
    ).dropna()
    out = {}
    for mod, g in d.groupby("modification", sort=True):
        agg = g.groupby("ratio")["v"].agg(["mean", "std", "count"]).reset_index()
        out[printable(mod)] = agg.fillna({"std": 0.0}).rename(columns={"count": "n"})
    return out


def _ratio_axes(fig: Figure, ylabel: str) -> Any:
    ax = fig.add_subplot()
    ax.set_xlabel("ratio (modification strength)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return ax


def _lines(ax: Any, t: pd.DataFrame, col: str, band: tuple[str, str] | None = None) -> None:
    lo_hi = (by_ratio(t, band[0]), by_ratio(t, band[1])) if band else None
    for mod, g in by_ratio(t, col).items():
        line = ax.errorbar(g["ratio"], g["mean"], yerr=g["std"], marker="o", capsize=3, label=mod)
        if lo_hi and mod in lo_hi[0] and mod in lo_hi[1]:
            lo, hi = lo_hi[0][mod], lo_hi[1][mod]
            m = lo.merge(hi, on="ratio", suffixes=("_lo", "_hi"))
            ax.fill_between(
                m["ratio"],
                m["mean_lo"],
                m["mean_hi"],
                alpha=0.2,
                color=line[0].get_color(),
                linewidth=0,
            )


def closeness_figure(t: pd.DataFrame, out_dir: Path) -> Path:
    _need(t, "modification", "ratio", "derived.closeness.score")
    fig = _new_figure("closeness_vs_ratio")
    ax = _ratio_axes(fig, "closeness score (derived vs parent)")
    _lines(
        ax, t, "derived.closeness.score", ("derived.closeness.ci_low", "derived.closeness.ci_high")
    )
    ref = _numeric(t, "independent.closeness.score_max").mean()
    if not math.isnan(ref):
        ax.axhline(ref, color="0.4", ls="--", label="independent refs (max, mean over jobs)")
    thr = _numeric(t, "derived.closeness.threshold").median()
    if not math.isnan(thr):
        ax.axhline(thr, color="k", ls=":", label="closeness threshold (median)")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title("Lineage closeness vs ratio (mean ± std over seeds; band: 95% CI)")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "closeness_vs_ratio")


def barrier_figure(t: pd.DataFrame, out_dir: Path) -> Path:
    _need(t, "modification", "ratio", "derived.determination.barrier")
    fig = _new_figure("barrier_vs_ratio")
    ax = _ratio_axes(fig, "loss barrier (derived vs parent)")
    _lines(ax, t, "derived.determination.barrier")
    thr = _numeric(t, "derived.determination.threshold").dropna()
    if len(thr):
        ax.axhline(thr.median(), color="k", ls="--", label="threshold τ (median over jobs)")
        if thr.max() > thr.min():
            ax.axhspan(thr.min(), thr.max(), color="k", alpha=0.08, label="τ range")
    ref = _numeric(t, "independent.determination.barrier_min").mean()
    if not math.isnan(ref):
        ax.axhline(ref, color="0.4", ls=":", label="independent refs (min barrier, mean)")
    ax.set_title("Loss barrier vs ratio (below τ: judged lineage)")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "barrier_vs_ratio")


def determination_table(t: pd.DataFrame, p: pd.DataFrame) -> pd.DataFrame:
    """Per modification: how many derived models were judged lineage (all truly are); and
    how many independent references were judged not lineage (none truly is)."""
    _need(t, "modification", "derived.determination.is_lineage")
    rows = []
    d = p[(p["role"] == "derived") & p["verdict"].notna()]
    mods = t.set_index("job")["modification"].astype(object).fillna("?")
    for mod, g in d.groupby(d["job"].map(mods), sort=True):
        ok = int(sum(bool(v) for v in g["verdict"]))
        rows.append(
            {
                "models": printable(mod),
                "truth": "lineage",
                "n": len(g),
                "correct": ok,
                "accuracy": ok / len(g),
            }
        )
    r = p[(p["role"] == "independent") & p["verdict"].notna()]
    if len(r):
        ok = int(sum(not bool(v) for v in r["verdict"]))
        rows.append(
            {
                "models": "independent references",
                "truth": "not lineage",
                "n": len(r),
                "correct": ok,
                "accuracy": ok / len(r),
            }
        )
    return pd.DataFrame(rows, columns=["models", "truth", "n", "correct", "accuracy"])


def accuracy_bar_figure(table: pd.DataFrame, out_dir: Path) -> Path:
    if table.empty:
        raise Skip("no determination verdicts")
    fig = _new_figure("determination_accuracy")
    ax = fig.add_subplot()
    colors = [
        "0.55" if m == "independent references" else f"C{i}" for i, m in enumerate(table["models"])
    ]
    bars = ax.bar(table["models"], table["accuracy"], color=colors)
    for b, (ok, n) in zip(bars, zip(table["correct"], table["n"])):
        ax.annotate(
            f"{ok}/{n}",
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("fraction judged correctly")
    ax.set_title("Determination accuracy per modification (and on independent references)")
    ax.tick_params(axis="x", labelsize=8, rotation=15)
    return _save(fig, out_dir, "determination_accuracy")


def confusion(p: pd.DataFrame) -> pd.DataFrame:
    """2x2 counts, rows = truth, columns = verdict, over every pair with a verdict."""
    d = p[p["verdict"].notna()]
    if d.empty:
        raise Skip(
            "no pair has a determination verdict (derived./independent.<i>."
            "determination.is_lineage)"
        )
    v = d["verdict"].map(bool)
    m = [[int(((d["truth"] == t) & (v == j)).sum()) for j in (True, False)] for t in (1, 0)]
    return pd.DataFrame(
        m,
        index=["truly lineage", "truly independent"],
        columns=["judged lineage", "judged not lineage"],
    )


def confusion_figure(cm: pd.DataFrame, out_dir: Path) -> Path:
    fig = _new_figure("confusion_matrix")
    ax = fig.add_subplot()
    ax.imshow(cm.to_numpy(), cmap="Blues", vmin=0)
    for (i, j), n in np.ndenumerate(cm.to_numpy()):
        dark = n > cm.to_numpy().max() / 2
        ax.text(
            j, i, str(n), ha="center", va="center", fontsize=14, color="white" if dark else "black"
        )
    ax.set_xticks([0, 1], list(cm.columns))
    ax.set_yticks([0, 1], list(cm.index))
    ax.set_title("Lineage vs independent: verdicts")
    return _save(fig, out_dir, "confusion_matrix")


# Detector name -> (column of pairs(), sign): higher signed score must mean "lineage".
DETECTORS: dict[str, tuple[str, float]] = {
    "closeness": ("closeness", 1.0),
    "barrier": ("barrier", -1.0),
}


def detection_auc(p: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple[Any, Any]]]:
    """ROC AUC of each score as a lineage detector over all pairs; also the ROC curves."""
    from sklearn.metrics import roc_auc_score, roc_curve

    rows, curves = [], {}
    for name, (col, sign) in DETECTORS.items():
        d = p[np.isfinite(p[col].astype(float))] if len(p) else p
        n_pos, n_neg = int((d["truth"] == 1).sum()), int((d["truth"] == 0).sum())
        auc = math.nan
        if n_pos and n_neg:
            y, s = d["truth"].to_numpy(int), sign * d[col].to_numpy(float)
            auc = float(roc_auc_score(y, s))
            fpr, tpr, _ = roc_curve(y, s)
            curves[name] = (fpr, tpr)
        score = "closeness score" if sign > 0 else f"-{col}"
        rows.append(
            {"detector": name, "score": score, "auc": auc, "positives": n_pos, "negatives": n_neg}
        )
    return pd.DataFrame(rows), curves


def roc_figure(aucs: pd.DataFrame, curves: dict[str, tuple[Any, Any]], out_dir: Path) -> Path:
    if not curves:
        raise Skip("ROC needs both derived models and independent references with a score")
    fig = _new_figure("roc")
    ax = fig.add_subplot()
    for name, (fpr, tpr) in curves.items():
        auc = float(aucs.set_index("detector").loc[name, "auc"])
        ax.plot(fpr, tpr, drawstyle="steps-post", lw=2, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate (independent judged lineage)")
    ax.set_ylabel("true positive rate (derived judged lineage)")
    ax.set_title("ROC over every pair in the sweep")
    ax.legend(loc="lower right", fontsize=9)
    return _save(fig, out_dir, "roc")


def accuracy_figure(t: pd.DataFrame, out_dir: Path) -> Path:
    _need(t, "modification", "ratio", "derived.accuracy")
    fig = _new_figure("accuracy_vs_ratio")
    ax = _ratio_axes(fig, "test accuracy of the derived model")
    _lines(ax, t, "derived.accuracy")
    for col, style, label in (
        ("parent.accuracy", "--", "parent (mean)"),
        ("independent.accuracy", ":", "independent refs (mean)"),
    ):
        v = _numeric(t, col).mean()
        if not math.isnan(v):
            ax.axhline(v, color="0.3", ls=style, label=label)
    ax.set_title("Derived accuracy vs ratio (mean ± std over seeds)")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "accuracy_vs_ratio")


def timing_table(t: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in t.columns if c.startswith("time.") and _numeric(t, c).notna().any()]
    if not cols:
        raise Skip("no job recorded time.*_s")
    order = {s: i for i, s in enumerate(TIME_STAGES)}
    rows = []
    for c in cols:
        v = _numeric(t, c).dropna()
        stage = c[len("time.") :].removesuffix("_s")
        rows.append(
            {
                "stage": stage,
                "jobs": len(v),
                "mean_s": v.mean(),
                "std_s": v.std(),
                "max_s": v.max(),
                "sum_s": v.sum(),
            }
        )
    rows.sort(key=lambda r: (order.get(r["stage"], len(order)), r["stage"]))
    return pd.DataFrame(rows)


def timing_by_modification(t: pd.DataFrame, stages: list[str]) -> pd.DataFrame:
    """Mean seconds per stage for each modification (rows) and stage (columns)."""
    d = pd.DataFrame({s: _numeric(t, f"time.{s}_s") for s in stages})
    d.insert(0, "modification", t["modification"].astype(object).fillna("?"))
    return d.groupby("modification", sort=True).mean().reset_index()


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
    "derived.determination.is_lineage": "lineage?",
    "derived.determination.barrier": "barrier",
    "derived.determination.threshold": "τ",
    "derived.closeness.score": "closeness",
    "derived.closeness.ci_low": "CI low",
    "derived.closeness.ci_high": "CI high",
    "time.total_s": "total s",
}


def make_sections(c: Collection, out_dir: Path, decision_planes: bool = True) -> list[Section]:
    """Draw every figure into `out_dir` and return the report's sections in order.
    Labels come from the sweep's metrics (modification names, job names), so they are
    drawn as plain text (no mathtext)."""
    with plain_figure_text():
        return _make_sections(c, out_dir, decision_planes)


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
        try:
            s.figures.append((fn(), caption))
        except Skip as e:
            s.notes.append(f"skipped: {e}")
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
        "Loss barrier on the linear path parent → derived; lineage when below τ.",
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
    try:
        roc.figures.append((roc_figure(aucs, curves, out_dir), "ROC curves"))
    except Skip as e:
        roc.notes.append(f"skipped: {e}")
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
