"""Reports from sweeps (issue 7): collection, figures, AUC, HTML/Markdown, W&B blocks, CLI.

Most tests run on a synthetic sweep tree written here (metrics.json + .hydra/ per job), so
the known answers (rows, AUC, confusion counts) come from the files themselves. One slow
test runs a tiny real sweep through run.py."""

from __future__ import annotations

import base64
import html
import importlib.util
import json
import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import HANG_S, python
from matplotlib.image import imread

from lineage.cli import main as lineage_main
from lineage.errors import LineageError
from lineage.report.collect import COLUMNS, collect, sweep_info
from lineage.report.figures import FIGURE_SIZES
from lineage.report.html import write_report
from lineage.report.sections import make_sections
from lineage.report.wandb_report import check_ready, report_blocks, sweep_groups, to_wandb
from lineage.results import pairs

ROOT = Path(__file__).resolve().parents[1]
# the fixed-size figures, then the lineage graph and one reference-range plot per kind
FIGURES = set(FIGURE_SIZES) | {
    "lineage_graph",
    "reference_range_basin",
    "reference_range_closeness",
}
MODS = ("finetune", "pruning")
RATIOS = (0.2, 0.5, 0.8)
SEEDS = (0, 1)
TASK = ["modification=finetune,pruning", "ratio=0.2,0.5,0.8", "seed=0,1", "logger=none"]


def _yaml(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(obj, sort_keys=False))


def _reference(seed: int, i: int) -> dict:
    """The same reference (same id, same numbers) in every job of one seed, as in a sweep."""
    score = [0.12, 0.45][i] + 0.03 * seed  # the second one overlaps heavy pruning
    barrier = [0.9, 0.35][i] + 0.05 * seed
    return {
        "id": f"ind-s{seed}-{i}",
        "path": f"/nowhere/ind-s{seed}-{i}.safetensors",
        "accuracy": 0.9,
        "verdict.is_lineage": barrier < 0.3,
        "evidence.basin.barrier": barrier,
        "evidence.basin.threshold": 0.3,
        "evidence.basin.loss_parent": LOSS_PARENT,
        "evidence.basin.abstains": False,
        "evidence.closeness.score": score,
        "evidence.closeness.ci_low": score - 0.03,
        "evidence.closeness.ci_high": score + 0.03,
    }


LOSS_PARENT = 0.3  # the basin scale's floor is 2% of it (determination.fallback_rel)


def verdict_keys(barrier: float, score: float, seed: int) -> dict:
    """The verdict's p-values as the engine computes them, against the seed's references."""
    from lineage.evaluate.verdict import logit, prediction_p

    def basin(b: float) -> float:
        return -np.log(max(b, 0.02 * LOSS_PARENT))

    refs = [_reference(seed, i) for i in (0, 1)]
    p = {
        "basin": prediction_p(basin(barrier), [basin(r["evidence.basin.barrier"]) for r in refs]),
        "closeness": prediction_p(
            logit(score), [logit(r["evidence.closeness.score"]) for r in refs]
        ),
    }
    best = min(p, key=lambda k: p[k])
    says = {f"derived.verdict.says.{k}": 2 * v <= 0.005 for k, v in p.items()}
    return {
        **says,
        "derived.verdict.p_value": min(1.0, 2 * p[best]),
        "derived.verdict.alpha": 0.005,
        "derived.verdict.decided_by": best if 2 * p[best] <= 0.005 else "",
        "derived.verdict.n_references": 2,
        "derived.verdict.reason": "",
        "derived.verdict.caveat": "",
        **{f"derived.verdict.p.{k}": v for k, v in p.items()},
    }


def synthetic_metrics(mod: str, ratio: float, seed: int) -> dict:
    harsh = 1.3 if mod == "pruning" else 1.0
    noise = 0.01 * ((seed * 7 + int(ratio * 10)) % 5 - 2)
    score = float(np.clip(1 - 0.7 * ratio * harsh + noise, 0, 1))
    barrier = 0.02 + 0.5 * ratio**2 * (2 if mod == "pruning" else 1) + abs(noise)
    m = {
        "modification": mod,
        "ratio": ratio,
        "data": "digits",
        "model": "mlp",
        "seed": seed,
        "git_sha": "abc123",
        "config_hash": f"h{mod}{ratio}{seed}",
        "parent.id": f"p{seed}",
        "parent.path": f"/nowhere/p{seed}.safetensors",
        "parent.accuracy": 0.95,
        "derived.id": f"d-{mod}-{ratio}-{seed}",
        "derived.path": "derived.safetensors",
        "derived.accuracy": 0.95 - 0.2 * ratio * harsh,
        "derived.sparsity": ratio if mod == "pruning" else None,
        "derived.verdict.is_lineage": barrier < 0.3,
        "derived.evidence.basin.barrier": barrier,
        "derived.evidence.basin.threshold": 0.3,
        "derived.evidence.basin.route": "basin",
        "derived.evidence.basin.margin": 0.3 - barrier,
        "derived.evidence.basin.loss_parent": LOSS_PARENT,
        "derived.evidence.basin.abstains": False,
        "derived.verdict.calibrated": True,
        "derived.evidence.closeness.score": score,
        "derived.evidence.closeness.match_rate": score,
        "derived.evidence.closeness.mean_distance": 1 - score,
        "derived.evidence.closeness.n_points": 200,
        "derived.evidence.closeness.ci_low": score - 0.04,
        "derived.evidence.closeness.ci_high": score + 0.04,
        "derived.evidence.closeness.seconds": 0.5,
        "derived.evidence.closeness.threshold": 0.6,
        "independent.accuracy": 0.9,
        "independent.evidence.basin.min": 0.35,
        "independent.false_positives": 0,
        "independent.evidence.closeness.max": 0.45 + 0.03 * seed,
        "time.parent_s": 3.0,
        "time.derive_s": 1.0 + ratio,
        "time.basin_s": 0.4,
        "time.closeness_s": 0.6,
        "time.inherited_s": 0.3,
        "time.total_s": 5.0 + ratio,
        "versions.torch": "2.x",
    }
    for i in (0, 1):
        m.update({f"independent.{i}.{k}": v for k, v in _reference(seed, i).items()})
    m.update(verdict_keys(barrier, score, seed))
    return m


def job_name(mod: str, ratio: float, seed: int) -> str:
    return f"modification={mod},ratio={ratio},seed={seed}"


def write_job(d: Path, mod: str, ratio: float, seed: int, metrics: object | None) -> None:
    cfg = {
        "name": "t",
        "seed": seed,
        "ratio": ratio,
        "modification": {"name": mod},
        "data": {"name": "digits", "limit": 120},
        "model": {"name": "mlp"},
        "logger": {"name": "none", "project": "lineage-test"},
    }
    ov = [f"modification={mod}", f"ratio={ratio}", f"seed={seed}", "logger=none"]
    _yaml(d / ".hydra" / "config.yaml", cfg)
    _yaml(d / ".hydra" / "overrides.yaml", ov)
    _yaml(
        d / ".hydra" / "hydra.yaml",
        {
            "hydra": {
                "mode": "MULTIRUN",
                "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": ov},
            }
        },
    )
    if metrics is not None:
        text = metrics if isinstance(metrics, str) else json.dumps(metrics)
        (d / "metrics.json").write_text(text)


def write_sweep(root: Path, broken: bool = True, multirun: bool = True) -> Path:
    """12 good jobs; with `broken`, also one missing, one failed and two malformed."""
    sweep = root / "sweep"
    if multirun:
        _yaml(
            sweep / "multirun.yaml",
            {
                "hydra": {
                    "overrides": {
                        "hydra": ["hydra.sweep.dir=out/sweep", "hydra.mode=MULTIRUN"],
                        "task": TASK,
                    }
                }
            },
        )
    for mod in MODS:
        for ratio in RATIOS:
            for seed in SEEDS:
                write_job(
                    sweep / job_name(mod, ratio, seed),
                    mod,
                    ratio,
                    seed,
                    synthetic_metrics(mod, ratio, seed),
                )
    if broken:
        write_job(sweep / "missing_job", "finetune", 0.9, 0, None)
        write_job(sweep / "failed_job", "pruning", 0.9, 0, None)
        (sweep / "failed_job" / "error.json").write_text(
            json.dumps({"error": "ratio=0.9 leaves no channel", "overrides": []})
        )
        write_job(sweep / "truncated_job", "pruning", 0.9, 1, '{"modification": "pru')
        write_job(sweep / "list_job", "pruning", 0.95, 1, "[1, 2, 3]")
    return sweep


def mann_whitney_auc(pos: list[float], neg: list[float]) -> float:
    """AUC as P(pos > neg) + P(pos == neg)/2, by brute force: independent of sklearn."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def auc_from_files(sweep: Path) -> dict[str, float]:
    """Read every metrics.json directly; positives = derived models, negatives = each
    (parent, reference) pair once."""
    pos: dict[str, list[float]] = {"closeness": [], "barrier": []}
    neg: dict[str, list[float]] = {"closeness": [], "barrier": []}
    seen = set()
    for f in sorted(sweep.rglob("metrics.json")):
        try:
            m = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue
        if not isinstance(m, dict):
            continue
        add(pos, m, "derived.")
        i = 0
        while f"independent.{i}.id" in m:
            key = (m["parent.id"], m[f"independent.{i}.id"])
            if key not in seen:
                seen.add(key)
                add(neg, m, f"independent.{i}.")
            i += 1
    return {k: mann_whitney_auc(pos[k], neg[k]) for k in pos}


def add(scores: dict[str, list[float]], m: dict, p: str) -> None:
    if m.get(p + "evidence.closeness.score") is not None:
        scores["closeness"].append(m[p + "evidence.closeness.score"])
    if m.get(p + "evidence.basin.barrier") is not None:
        scores["barrier"].append(-m[p + "evidence.basin.barrier"])


def md_auc(md: str) -> dict[str, float]:
    return {
        name: float(v)
        for name, v in re.findall(
            r"^\| (closeness|barrier) \| (?:closeness score|-barrier) \| ([0-9.]+) \|", md, re.M
        )
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    sweep = write_sweep(root)
    c = collect([sweep])
    files = write_report(c, sweep / "report", decision_planes=False)
    return sweep, c, files


# --- collect -------------------------------------------------------------------------------


def test_one_row_per_job_with_documented_columns(built):
    sweep, c, _ = built
    t = c.table
    assert len(t) == len(MODS) * len(RATIOS) * len(SEEDS)
    assert list(t.columns[: len(COLUMNS)]) == COLUMNS
    assert t["job"].is_unique
    got = {(r.modification, float(r.ratio), int(r.seed)) for r in t.itertuples()}
    assert got == {(m, r, s) for m in MODS for r in RATIOS for s in SEEDS}
    row = t.set_index("job").loc[job_name("pruning", 0.8, 1)]
    assert row["derived.evidence.closeness.score"] == pytest.approx(
        synthetic_metrics("pruning", 0.8, 1)["derived.evidence.closeness.score"]
    )
    assert row["overrides"] == "modification=pruning,ratio=0.8,seed=1,logger=none"
    assert (
        "independent.1.evidence.closeness.score" in t.columns
    )  # every key, not just the core ones


def test_malformed_named_and_skipped_with_warning(tmp_path, caplog):
    sweep = write_sweep(tmp_path)
    with caplog.at_level("WARNING", logger="lineage"):
        c = collect([sweep])
    bad = {i.path for i in c.issues_of("malformed")}
    assert bad == {sweep / "truncated_job" / "metrics.json", sweep / "list_job" / "metrics.json"}
    assert "truncated_job" in caplog.text and "list_job" in caplog.text
    assert "not a JSON object" in next(
        i.detail for i in c.issues_of("malformed") if "list_job" in str(i.path)
    )
    assert not any("truncated" in j or "list_job" in j for j in c.table["job"])


def test_missing_and_failed_runs_listed(built):
    sweep, c, files = built
    assert [i.path for i in c.issues_of("missing")] == [sweep / "missing_job"]
    (err,) = c.issues_of("error")
    assert err.path == sweep / "failed_job" and "leaves no channel" in err.detail
    md = files.markdown.read_text()
    assert "missing_job" in md and "failed_job" in md and "truncated_job" in md
    kinds = sorted(i["kind"] for i in files.summary_data["issues"])
    assert kinds == ["error", "malformed", "malformed", "missing"]


def test_identity_keys_fall_back_to_the_job_config(tmp_path):
    d = tmp_path / "run"
    write_job(d, "quantize", 0.25, 3, {"parent.id": "p", "time.total_s": 1.0})
    c = collect([d])
    (row,) = c.table.to_dict("records")
    assert (row["modification"], row["ratio"], row["seed"], row["job"]) == (
        "quantize",
        0.25,
        3,
        "run",
    )


def test_partial_rows_are_flagged(tmp_path):
    sweep = write_sweep(tmp_path, broken=False)
    m = synthetic_metrics("finetune", 0.2, 0)
    del m["derived.evidence.closeness.score"]
    (sweep / job_name("finetune", 0.2, 0) / "metrics.json").write_text(json.dumps(m))
    (p,) = collect([sweep]).issues_of("partial")
    assert (
        p.path.name == job_name("finetune", 0.2, 0)
        and "derived.evidence.closeness.score" in p.detail
    )


def test_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(LineageError, match="no such file"):
        collect([tmp_path / "nope"])
    with pytest.raises(LineageError, match="no metrics.json"):
        collect([tmp_path])


def test_same_jobs_through_two_paths_are_counted_once(tmp_path):
    sweep = write_sweep(tmp_path, broken=False)
    c = collect([sweep, sweep / job_name("finetune", 0.2, 0)])
    assert len(c.table) == 12


def test_pairs_dedupe_references_per_parent(built):
    _, c, _ = built
    p = pairs(c.table)
    assert (p["kind"] == "derived").sum() == 12
    refs = p[p["kind"] == "independent"]
    assert sorted(refs["model_id"]) == ["ind-s0-0", "ind-s0-1", "ind-s1-0", "ind-s1-1"]


# --- figures, AUC, tables ------------------------------------------------------------------


def test_figures_are_pngs_of_the_expected_size(built):
    sweep, _, files = built
    for name, (w, h) in FIGURE_SIZES.items():
        png = sweep / "report" / f"{name}.png"
        assert png.stat().st_size > 5000, name
        img = imread(png)
        assert img.shape[:2] == (h, w), name
        assert img[..., :3].std() > 0.05, f"{name} is blank"
    assert set(files.summary_data["figures"]) == FIGURES


def test_auc_in_report_equals_auc_from_the_files(built):
    sweep, _, files = built
    want = auc_from_files(sweep)
    assert 0.5 < want["closeness"] < 1.0  # the overlap makes it a real test, not 1 == 1
    got_md = md_auc(files.markdown.read_text())
    got_json = files.summary_data["auc"]
    for k in ("closeness", "barrier"):
        assert got_md[k] == pytest.approx(want[k], abs=1e-6)
        assert got_json[k] == pytest.approx(want[k], abs=1e-6)
        assert f"{want[k]:.6f}" in files.html.read_text()


def test_determination_accuracy_and_confusion_counts(built):
    sweep, _, files = built
    det = next(s for s in files.sections if s.key == "determination")
    acc = dict(det.tables)["Judged correctly, per modification"].set_index("models")
    for mod in MODS:
        judged = [
            synthetic_metrics(mod, r, s)["derived.verdict.is_lineage"]
            for r in RATIOS
            for s in SEEDS
        ]
        assert acc.loc[mod, "correct"] == sum(judged)
        assert acc.loc[mod, "accuracy"] == pytest.approx(sum(judged) / len(judged))
    cm = dict(det.tables)["Confusion matrix (pairs)"].set_index("")
    tp = sum(
        synthetic_metrics(m, r, s)["derived.verdict.is_lineage"]
        for m in MODS
        for r in RATIOS
        for s in SEEDS
    )
    fp = sum(_reference(s, i)["evidence.basin.barrier"] < 0.3 for s in SEEDS for i in (0, 1))
    assert cm.loc["truly lineage"].tolist() == [tp, 12 - tp]
    assert cm.loc["truly independent"].tolist() == [fp, 4 - fp]


def test_timing_table(built):
    _, c, files = built
    (_, t), (_, per_mod) = next(s for s in files.sections if s.key == "timing").tables
    t = t.set_index("stage")
    per_mod = per_mod.set_index("modification")
    assert per_mod.loc["pruning", "derive"] == pytest.approx(1.0 + sum(RATIOS) / 3)
    assert list(t.index) == ["parent", "derive", "basin", "closeness", "inherited", "total"]
    assert t.loc["total", "sum_s"] == pytest.approx(sum(5.0 + r for r in RATIOS) * 4)
    assert t.loc["derive", "max_s"] == pytest.approx(1.8)


def test_html_is_self_contained_and_markdown_links_exist(built):
    sweep, _, files = built
    page = files.html.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == len(FIGURES)
    for s in srcs:
        assert s.startswith("data:image/png;base64,")
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", files.markdown.read_text())
    assert len(links) == len(FIGURES)
    assert all((sweep / "report" / link).is_file() for link in links)
    assert (sweep / "report" / "metrics.csv").read_text().count("\n") == 13


def test_provenance_config_sha_and_command(built):
    sweep, c, files = built
    info = sweep_info(c)
    assert info.git_shas == ["abc123"]
    assert info.commands == ["python run.py -m " + " ".join(TASK) + " hydra.sweep.dir=out/sweep"]
    assert not info.reconstructed
    md = files.markdown.read_text()
    assert "abc123" in md and "modification=finetune,pruning" in md
    assert "name: finetune" in md  # the composed config is shown


def test_sweep_command_reconstructed_without_multirun_yaml(tmp_path):
    sweep = write_sweep(tmp_path, broken=False, multirun=False)
    info = sweep_info(collect([sweep]))
    assert info.reconstructed
    assert info.commands == ["python run.py -m " + " ".join(TASK)]


def test_missing_columns_skip_sections_without_crashing(tmp_path):
    sweep = tmp_path / "sweep"
    for r in (0.1, 0.9):
        write_job(
            sweep / f"ratio={r}",
            "finetune",
            r,
            0,
            {"parent.id": "p0", "parent.accuracy": 0.9, "time.total_s": 2.0},
        )
    files = write_report(collect([sweep]), tmp_path / "out", decision_planes=False)
    assert files.summary_data["figures"] == {}
    skipped = files.summary_data["skipped"]
    assert {"closeness", "barrier", "determination", "roc", "accuracy"} <= set(skipped)
    assert "derived.evidence.closeness.score" in skipped["closeness"][0]
    assert files.summary_data["auc"] == {"closeness": None, "barrier": None}
    assert "<table>" in files.html.read_text()


# --- decision planes -----------------------------------------------------------------------


@pytest.fixture()
def sweep_with_models(tmp_path):
    """Two jobs with real (tiny, untrained) model files, so the planes can be drawn."""
    import torch

    from lineage import models

    torch.manual_seed(0)
    zoo = tmp_path / "zoo"
    files = {}
    for name in ("p0", "ind-s0-0", "d1", "d2"):
        m = models.build("mlp", 10, 1, (8, 8), hidden=[16])
        files[name] = models.save(m, zoo / f"{name}.safetensors", {"id": name})
    sweep = tmp_path / "sweep"
    for mod, did in (("finetune", "d1"), ("pruning", "d2")):
        m = synthetic_metrics(mod, 0.5, 0)
        m.update(
            {
                "parent.path": str(files["p0"]),
                "derived.path": str(files[did]),
                "independent.0.path": str(files["ind-s0-0"]),
            }
        )
        write_job(sweep / job_name(mod, 0.5, 0), mod, 0.5, 0, m)
    return sweep


def test_decision_planes_drawn_from_the_jobs_models(sweep_with_models, tmp_path):
    pytest.importorskip("lineage.plots")
    secs = make_sections(collect([sweep_with_models]), tmp_path / "out")
    planes = next(s for s in secs if s.key == "decision_plane")
    assert planes.notes == []
    ((png, caption),) = planes.figures
    assert imread(png).shape[:2] == (300, 4 * 300)  # parent, 2 derived, 1 independent
    assert "parent" in caption and "independent" in caption


def test_decision_plane_failure_is_a_note(sweep_with_models, tmp_path, monkeypatch):
    fake = types.ModuleType("lineage.plots")

    def boom(*a, **k):
        raise RuntimeError("kaboom")

    fake.decision_plane = boom
    monkeypatch.setitem(sys.modules, "lineage.plots", fake)
    import lineage

    monkeypatch.setattr(lineage, "plots", fake, raising=False)
    secs = make_sections(collect([sweep_with_models]), tmp_path / "out")
    planes = next(s for s in secs if s.key == "decision_plane")
    assert planes.figures == [] and "kaboom" in planes.notes[0]
    assert next(s for s in secs if s.key == "roc").figures  # the rest is still there


# --- W&B -----------------------------------------------------------------------------------


def test_wandb_blocks_mirror_the_local_report(built):
    sweep, c, files = built
    groups = sweep_groups(list(c.table["job_dir"]))
    assert groups == ["sweep"]
    blocks = report_blocks(files.sections, files.summary_data, "proj", "me", groups)
    json.dumps(blocks)  # plain data, nothing from wandb
    heads = [b["section"] for b in blocks if b["type"] == "h2"]
    assert heads == [s.key for s in files.sections]
    grids = [b for b in blocks if b["type"] == "panel_grid"]
    assert {g["section"] for g in grids} >= {"closeness", "barrier", "accuracy", "timing"}
    for g in grids:
        assert g["runset"]["filters"] == "Metric('group') == 'sweep'"
        assert (g["runset"]["project"], g["runset"]["entity"]) == ("proj", "me")
        for p in g["panels"]:
            refs = [p["x"], p["y"]] if p["type"] == "scatter" else p["metrics"]
            for ref in refs:
                key = ref.get("summary") or ref.get("config")
                assert key in c.table.columns, key  # every panel plots a recorded metric
    text = "\n".join(b.get("text", "") for b in blocks)
    assert f"{files.summary_data['auc']['closeness']:.6f}" in text
    assert any(b["type"] == "code" and "modification" in b["text"] for b in blocks)
    # each verdict's explanation, and no link that only resolves beside the local report
    assert text.count("combined p = ") == 12 and "metrics.json](" not in text


def test_to_wandb_maps_blocks_onto_the_workspaces_api(built, monkeypatch):
    calls: list[tuple[str, tuple, dict]] = []

    def recorder(name):
        def make(*a, **k):
            calls.append((name, a, k))
            return (name, a, k)

        return make

    v2 = types.ModuleType("wandb_workspaces.reports.v2")
    for name in (
        "Report",
        "TableOfContents",
        "H2",
        "P",
        "MarkdownBlock",
        "CodeBlock",
        "Runset",
        "PanelGrid",
        "ScatterPlot",
        "BarPlot",
        "Config",
        "SummaryMetric",
    ):
        setattr(v2, name, recorder(name))
    pkg, reports = (
        types.ModuleType("wandb_workspaces"),
        types.ModuleType("wandb_workspaces.reports"),
    )
    pkg.reports, reports.v2 = reports, v2
    for mod_name, mod in (
        ("wandb_workspaces", pkg),
        ("wandb_workspaces.reports", reports),
        ("wandb_workspaces.reports.v2", v2),
    ):
        monkeypatch.setitem(sys.modules, mod_name, mod)
    _, c, files = built
    blocks = report_blocks(files.sections, files.summary_data, "proj", None, ["sweep"])
    name, _, kw = to_wandb(blocks, "proj", None, "T")
    assert name == "Report" and kw["project"] == "proj" and "entity" not in kw
    assert len(kw["blocks"]) == len(blocks)
    scatter = next(k for n, _, k in calls if n == "ScatterPlot")
    assert scatter["x"] == ("Config", ("ratio",), {})
    assert scatter["y"] == ("SummaryMetric", ("derived.evidence.closeness.score",), {})


def test_check_ready_says_how_to_log_in(tmp_path):
    home = {"HOME": str(tmp_path)}
    with pytest.raises(LineageError, match="wandb login"):
        check_ready({**home, "WANDB_MODE": "offline", "WANDB_API_KEY": "k" * 40})
    with pytest.raises(LineageError, match="not logged in.*wandb login"):
        check_ready(home)
    (tmp_path / ".netrc").write_text(
        "machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n"
    )
    os.chmod(tmp_path / ".netrc", 0o600)
    if importlib.util.find_spec("wandb_workspaces") is None:  # past the login check
        with pytest.raises(LineageError, match="pip install wandb-workspaces"):
            check_ready(home)


def _cli(*args: str, env: dict[str, str], timeout: float = HANG_S):
    e = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WANDB_API_KEY", "NETRC", "WANDB_MODE", "WANDB_BASE_URL")
    }
    return python(str(ROOT / "scripts" / "report.py"), *args, timeout=timeout, env={**e, **env})


@pytest.mark.parametrize("mode", ["offline", None])
def test_cli_wandb_without_login_fails_before_any_work(built, tmp_path, mode):
    sweep, _, _ = built
    env = {"HOME": str(tmp_path), **({"WANDB_MODE": mode} if mode else {})}
    r = _cli(str(sweep), "--wandb", "--out", str(tmp_path / "out"), env=env)
    assert r.returncode != 0
    assert "wandb login" in r.stderr and "WANDB_API_KEY" in r.stderr
    assert not (tmp_path / "out").exists()  # failed before doing any slow work


def test_cli_default_out_dir_and_exit_code(tmp_path, capsys):
    sweep = write_sweep(tmp_path)
    assert lineage_main(["report", str(sweep), "--no-decision-planes"]) == 0
    assert (sweep / "report" / "report.html").is_file()
    assert (sweep / "report" / "report.md").is_file()
    capsys.readouterr()
    assert lineage_main(["report", str(tmp_path / "nope")]) == 2  # bad input
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope" in err and len(err.splitlines()) == 1


# --- end to end ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.heavy
def test_real_sweep_report_end_to_end(tmp_path):
    """A tiny real sweep through run.py, then the report through its CLI."""
    from conftest import run_py

    sweep = tmp_path / "sweep"
    r = run_py(
        "-m",
        "experiment=smoke",
        "modification=finetune,pruning",
        "ratio=0.2,0.8",
        "logger=none",
        # Fewer samples and epochs than smoke: ~75 s instead of ~3 min on 2 shared cores.
        "data.limit=500",
        "data.epochs=3",
        f"paths.zoo={tmp_path / 'zoo'}",
        f"hydra.sweep.dir={sweep}",
        timeout=HANG_S,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "report"
    rep = _cli(str(sweep), "--out", str(out), env={})
    assert rep.returncode == 0, rep.stderr[-3000:]
    c = collect([sweep])
    assert len(c.table) == 4 and not c.issues, c.issues
    assert set(COLUMNS) <= set(c.table.columns)
    assert {(m, r) for m, r in zip(c.table["modification"], c.table["ratio"])} == {
        (m, r) for m in ("finetune", "pruning") for r in (0.2, 0.8)
    }
    for col in (
        "derived.evidence.closeness.score",
        "derived.evidence.basin.barrier",
        "derived.verdict.is_lineage",
        "derived.accuracy",
        "time.total_s",
    ):
        assert c.table[col].notna().all(), col
    for name, (w, h) in FIGURE_SIZES.items():
        assert imread(out / f"{name}.png").shape[:2] == (h, w), name
    summary = json.loads((out / "report.json").read_text())
    want = auc_from_files(sweep)
    got = md_auc((out / "report.md").read_text())
    for k in ("closeness", "barrier"):
        assert got[k] == pytest.approx(want[k], abs=1e-6)
        assert summary["auc"][k] == pytest.approx(want[k], abs=1e-6)
    if importlib.util.find_spec("lineage.plots"):
        assert "decision_plane" in summary["figures"], summary["skipped"]


def test_console_summary_prints_each_caveat_under_the_table():
    from lineage.report.console import summary_table

    m = {
        "data": "digits",
        "model": "mlp",
        "parent.id": "m-1",
        "parent.accuracy": 0.97,
        "derived.id": "d-1",
        "derived.accuracy": 0.6,
        "derived.verdict.is_lineage": True,
        "derived.evidence.basin.barrier": 0.0,
        "derived.verdict.caveat": "weak basin evidence: L(1) is 50x L(0)",
        "derived.evidence.closeness.score": 0.09,
        "independent.0.id": "m-2",
        "independent.0.verdict.is_lineage": False,
        "independent.0.verdict.caveat": "",
        "time.train_s": 1.0,
    }
    lines = summary_table(m).splitlines()
    assert lines[0] == "digits / mlp"
    assert [ln.split()[0] for ln in lines[1:5]] == ["model", "parent", "derived", "independent"]
    assert lines[5] == "caution (derived): weak basin evidence: L(1) is 50x L(0)"
    assert lines[6] == "time: train 1.0s"
    del m["derived.verdict.caveat"]
    assert not any(ln.startswith("caution") for ln in summary_table(m).splitlines())


def _path(peak: float) -> list[dict]:
    """A path whose loss rises by `peak` in the middle (a barrier of about `peak`)."""
    return [
        {"alpha": a, "loss": 0.1 + peak * (1 - abs(2 * a - 1)), "error": 0.02}
        for a in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]


def test_the_report_shows_each_verdicts_evidence_caveats_and_path(tmp_path):
    """p-values, the deciding evidence, the caveat and the loss path of every job reach
    report.html; the path is drawn over the references' paths."""
    sweep = tmp_path / "sweep"
    for k, mod in enumerate(MODS):
        m = synthetic_metrics(mod, 0.5, 0)
        m.update(
            {
                "derived.verdict.p.basin": 1e-4 * (k + 1),
                "derived.verdict.p.closeness": 0.5,
                "derived.verdict.p.inherited": 0.03,
                "derived.verdict.p_value": 3e-4 * (k + 1),
                "derived.verdict.alpha": 0.005,
                "derived.verdict.decided_by": "basin",
                "derived.verdict.n_references": 6,
                "derived.verdict.caveat": "" if k else "only the basin test says lineage",
                "derived.evidence.basin.curve": _path(0.01),
                "independent.0.evidence.basin.curve": _path(0.8),
                "independent.1.evidence.basin.curve": _path(0.6),
            }
        )
        write_job(sweep / job_name(mod, 0.5, 0), mod, 0.5, 0, m)
    files = write_report(collect([sweep]), tmp_path / "report", decision_planes=False)
    ev = next(s for s in files.sections if s.key == "evidence")
    ((_, table),) = ev.tables
    assert table["p basin"].tolist() == ["0.0001", "0.0002"]
    assert table["decided by"].tolist() == ["basin", "basin"]
    paths = [p for p, _ in ev.figures if p.name.startswith("loss_path")]
    assert [p.name for p in paths] == ["loss_path_0.png", "loss_path_1.png"]
    for png in paths:
        img = imread(png)
        assert img.shape[:2] == (400, 600) and img[..., :3].std() > 0.05
    page = files.html.read_text()
    assert "only the basin test says lineage" in page and "p (Bonferroni)" in page
    # and the lineage graph, and the basin's and closeness's reference ranges (inherited
    # recorded a p-value but no value to draw)
    assert page.count("data:image/png;base64,") == len(FIGURE_SIZES) + 2 + 3


# --- why each verdict: explanations, reference ranges, lineage graph, links ----------------


def _row(**kv) -> pd.Series:

    return pd.Series({"job": "j", "job_dir": float("nan"), **kv})


def _basin_row(suspect: float, refs: list[float]) -> pd.Series:
    """A job with only basin evidence; barriers below 0.006 sit on the scale's floor (2% of
    L(0) = 0.3)."""
    from lineage.evaluate.verdict import prediction_p

    def stat(b: float) -> float:
        return -np.log(max(b, 0.006))

    kv = {
        "derived.verdict.is_lineage": False,
        "derived.verdict.p_value": 0.5,
        "derived.verdict.alpha": 0.005,
        "derived.verdict.n_references": len(refs),
        "derived.verdict.p.basin": prediction_p(stat(suspect), [stat(r) for r in refs]),
        "derived.evidence.basin.barrier": suspect,
        "derived.evidence.basin.loss_parent": LOSS_PARENT,
        "derived.evidence.basin.abstains": False,
    }
    for i, r in enumerate(refs):
        kv[f"independent.{i}.id"] = f"ref{i}"
        kv[f"independent.{i}.evidence.basin.barrier"] = r
        kv[f"independent.{i}.evidence.basin.loss_parent"] = LOSS_PARENT
        kv[f"independent.{i}.evidence.basin.abstains"] = False
    return _row(**kv)


def test_explanation_says_where_the_value_sits_and_so_why_p_is_what_it_is():
    from lineage.report.explain import explain_row

    def why(suspect, refs):
        (k,) = explain_row(_basin_row(suspect, refs)).kinds
        assert k.kind == "basin" and k.refs == [(f"ref{i}", r) for i, r in enumerate(refs)]
        return k

    # on the floor with two of four references: they share one value of the scale
    k = why(0.001, [0.002, 0.004, 0.5, 0.6])
    assert "level with 2 of the 4 references" in k.why and "floor" in k.why
    assert k.stat == pytest.approx(-np.log(0.006)) and k.p > 0.05
    # a barrier below the floor gets the same p as one on it: p does not move
    assert why(0.0001, [0.002, 0.004, 0.5, 0.6]).p == pytest.approx(k.p)
    assert "inside the references' range: 2 of the 4" in why(0.3, [0.1, 0.2, 0.5, 0.6]).why
    assert "more parent-like than every reference" in why(0.05, [0.4, 0.5, 0.6, 0.7]).why
    assert "less parent-like than every reference" in why(0.9, [0.4, 0.5, 0.6, 0.7]).why
    assert "share one value" in why(0.001, [0.001, 0.002, 0.003, 0.004]).why


def test_explanation_answer_p_against_alpha_reason_and_caveat():
    from lineage.report.explain import explain_row

    e = explain_row(
        _row(
            **{
                "derived.verdict.is_lineage": None,
                "derived.verdict.p_value": 1.0,
                "derived.verdict.alpha": 0.005,
                "derived.verdict.n_references": 2,
                "derived.verdict.reason": "undetermined: 2 references",
                "derived.verdict.p.closeness": 0.2,
                "derived.evidence.closeness.score": 0.4,
                "independent.0.evidence.closeness.score": 0.1,
                "independent.1.evidence.closeness.score": 0.5,
            }
        )
    )
    assert e.answer == "undetermined"
    assert e.summary() == "undetermined: combined p = 1 > alpha 0.005, against 2 references"
    assert [k.kind for k in e.kinds] == ["closeness"]  # the others recorded nothing
    assert e.lines()[-1] == "note: undetermined: 2 references"
    e2 = explain_row(
        _row(
            **{
                "derived.verdict.is_lineage": True,
                "derived.verdict.p_value": 1e-4,
                "derived.verdict.alpha": 0.005,
                "derived.verdict.decided_by": "basin",
                "derived.verdict.caveat": "weak basin evidence",
                "derived.verdict.p.basin": 5e-5,
            }
        )
    )
    assert e2.summary() == "lineage: combined p = 0.0001 <= alpha 0.005, decided by basin"
    assert "caution: weak basin evidence" in e2.lines()
    assert "p n/a" not in e2.lines()[1] and "p 5e-05" in e2.lines()[1]


def test_a_suspect_centred_evidence_is_explained_against_its_sources():
    """Its p was measured against each reference in the parent's place: the explanation
    gives those values, not the references' own (which would contradict the p)."""
    from lineage.report.explain import explain_row

    e = explain_row(
        _row(
            **{
                "derived.verdict.is_lineage": True,
                "derived.verdict.p_value": 1e-4,
                "derived.verdict.alpha": 0.005,
                "derived.verdict.p.closeness": 2.5e-5,
                "derived.verdict.null.closeness": "suspect-centred",
                "derived.verdict.against.closeness": [-0.8, -0.6, -0.4, -0.2],
                "derived.evidence.closeness.score": 0.9,
                "derived.evidence.closeness.against": [0.31, 0.35, 0.4, 0.45],
                "independent.0.evidence.closeness.score": 0.88,  # e(parent, reference 0)
                "independent.1.evidence.closeness.score": 0.91,
            }
        )
    )
    (k,) = e.kinds
    assert k.centred and k.ref_range == (0.31, 0.45) and len(k.ref_stats) == 4
    assert "with each reference in the parent's place 0.31 to 0.45, 4 of them" in k.why
    assert "more parent-like than every reference" in k.why


def test_every_verdict_is_explained_in_the_report(built):
    sweep, c, files = built
    s = next(s for s in files.sections if s.key == "verdicts")
    assert len(s.explanations) == 12
    page, md = files.html.read_text(), files.markdown.read_text()
    assert page.count('<div class="verdict') == 12
    m = synthetic_metrics("pruning", 0.8, 1)
    e = next(e for e in s.explanations if e.job == job_name("pruning", 0.8, 1))
    want = "lineage" if m["derived.verdict.is_lineage"] else "not lineage"
    assert e.summary().startswith(f"{want}: combined p = {m['derived.verdict.p_value']:.3g}")
    assert html.escape(e.summary(), quote=False) in page
    assert e.summary().replace(">", "&gt;") in md
    for k in e.kinds:
        assert k.p == pytest.approx(m[f"derived.verdict.p.{k.kind}"])
        assert f"p {k.p:.3g}" in k.why
    # one inline range strip per kind and job, each reference a mark with its id
    assert page.count('<svg class="range"') == 24
    assert "<title>reference ind-s1-0:" in page


def test_range_strip_escapes_names_and_marks_every_model():
    from lineage.report.explain import KindEvidence
    from lineage.report.ranges import range_svg

    k = KindEvidence("basin", "barrier", "", 0.1, [("<b>x</b>", 0.5), ("r2", 0.7)], 0.2, False)
    svg = range_svg(k)
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg
    assert svg.count("<circle") == 2 and svg.count("<polygon") == 1
    xs = [float(x) for x in re.findall(r'cx="([0-9.]+)"', svg)]
    assert xs[0] < xs[1]  # 0.5 left of 0.7
    poly = float(re.search(r'<polygon points="([0-9.]+),', svg).group(1))
    assert poly < xs[0]  # the suspect's 0.1 is left of both


def test_reference_range_figures_one_per_kind(built):
    sweep, _, files = built
    for kind in ("basin", "closeness"):
        img = imread(sweep / "report" / f"reference_range_{kind}.png")
        assert img.shape[0] > 300 and img[..., :3].std() > 0.05


def test_lineage_graph_from_the_zoo_records(tmp_path):
    from lineage.report.graph import lineage_edges

    sweep = write_sweep(tmp_path, broken=False)
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    lines = [{"parent": "m-root", "child": "p0", "modification": "finetune", "ratio": 0.1}]
    lines.append({"parent": "m-other", "child": "d-elsewhere", "modification": "x"})
    for mod in MODS:
        for r in RATIOS:
            for seed in SEEDS:
                m = synthetic_metrics(mod, r, seed)
                lines.append({"parent": m["parent.id"], "child": m["derived.id"]})
                lines[-1].update(modification=mod, ratio=r)
    (zoo / "lineage.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    for d in filter(Path.is_dir, sweep.iterdir()):
        cfg = yaml.safe_load((d / ".hydra" / "config.yaml").read_text())
        cfg["paths"] = {"zoo": str(zoo)}
        (d / "config.json").write_text(json.dumps(cfg))
    edges, source = lineage_edges(collect([sweep]).table)
    assert "lineage.jsonl" in source
    # the sweep's 12 edges and the chain above parent p0, not the unrelated edge
    assert len(edges) == 13 and "d-elsewhere" not in set(edges["child"])
    assert ("m-root", "p0") in set(zip(edges["parent"], edges["child"]))
    files = write_report(collect([sweep]), tmp_path / "out", decision_planes=False)
    assert imread(tmp_path / "out" / "lineage_graph.png")[..., :3].std() > 0.05
    assert "m-root" in files.html.read_text()


def test_lineage_graph_falls_back_to_the_metrics(built):
    sweep, c, files = built
    s = next(s for s in files.sections if s.key == "lineage")
    assert "the jobs' metrics" in s.text
    ((_, edges),) = s.tables
    assert len(edges) == 12 and set(edges["parent"]) == {"p0", "p1"}


def test_links_to_each_jobs_files_resolve(tmp_path):
    from urllib.parse import unquote

    sweep = write_sweep(tmp_path, broken=False)
    job = sweep / job_name("finetune", 0.2, 0)
    (job / "wandb" / "offline-run-20260101_000000-abc").mkdir(parents=True)
    (job / "wandb" / "offline-run-20260101_000000-abc" / "run-abc.wandb").write_bytes(b"x")
    os.symlink("offline-run-20260101_000000-abc", job / "wandb" / "latest-run")
    files = write_report(collect([sweep]), tmp_path / "elsewhere" / "rep", decision_planes=False)
    page = files.html.read_text()
    hrefs = re.findall(r'<a href="([^"#][^"]*)"', page)
    assert hrefs and all(not h.startswith("/") and "://" not in h for h in hrefs)
    targets = {(files.out_dir / unquote(h)).resolve() for h in hrefs}
    assert all(t.exists() for t in targets)
    jobs = list(filter(Path.is_dir, sweep.iterdir()))
    assert {d / "metrics.json" for d in jobs} <= targets
    assert {d / ".hydra" / "config.yaml" for d in jobs} <= targets
    assert job / "wandb" / "offline-run-20260101_000000-abc" in targets
    assert ">W&amp;B run</a>" in page


def test_jobs_table_is_narrow_and_says_undetermined(built):
    _, c, files = built
    jobs = next(s for s in files.sections if s.key == "jobs")
    (_, table), _ = jobs.tables
    assert len(table.columns) <= 10 and list(table.columns)[-1] == "files"
    assert set(table["verdict"]) <= {"lineage", "not lineage", "undetermined"}


def test_roc_section_says_why_auc_and_p_differ(built):
    sweep, c, files = built
    roc = next(s for s in files.sections if s.key == "roc")
    assert "ranks every pair" in roc.text and "its own parent's few references" in roc.text
    usage = dict(roc.tables)["Each evidence's p-values over the sweep's jobs"].set_index("evidence")
    every = [synthetic_metrics(m, r, s) for m in MODS for r in RATIOS for s in SEEDS]
    for kind in ("basin", "closeness"):
        assert usage.loc[kind, "smallest p"] == pytest.approx(
            min(m[f"derived.verdict.p.{kind}"] for m in every)
        )
        assert usage.loc[kind, "decided"] == sum(
            m["derived.verdict.decided_by"] == kind for m in every
        )


def test_a_value_on_the_scales_floor_is_called_flat():
    from lineage.report.explain import explain_row

    refs = [0.1, 0.2, 0.3, 0.4]
    (on,) = explain_row(_basin_row(0.001, refs)).kinds  # below 2% of L(0) = 0.006
    (off,) = explain_row(_basin_row(0.05, refs)).kinds
    assert on.flat and "flat stretch" in on.why
    assert not off.flat and "flat stretch" not in off.why


def test_a_results_folders_data_target_is_never_imported(sweep_with_models, tmp_path):
    """A sweep folder may come from anyone: the decision planes skip a job whose config
    names a data `_target_` instead of importing it."""
    pytest.importorskip("lineage.plots")
    for cfg in sweep_with_models.glob("*/.hydra/config.yaml"):
        text = cfg.read_text().replace("name: digits", "_target_: this.x\n  name: digits")
        cfg.write_text(text)
    secs = make_sections(collect([sweep_with_models]), tmp_path / "out")
    planes = next(s for s in secs if s.key == "decision_plane")
    assert planes.figures == [] and "never imports" in planes.notes[0]
    assert "this" not in sys.modules


def write_tree(folder: Path) -> Path:
    """A `lineage tree --out` folder as the command writes it: P -> C -> G, I a root."""
    from lineage import tree_files
    from lineage.trees import Edge, Tree

    ids = ["P", "C", "G", "I"]
    edges = [
        Edge("P", "C", 1e-8, 8.0, "basin", 0.91, 0.01, weight=8.0),
        Edge("C", "G", 1e-6, 6.0, "distance", 0.84, 0.02, weight=6.0),
    ]
    t = Tree(ids, edges, ["P", "I"], {}, [], dict.fromkeys(ids, 0.9), dict.fromkeys(ids, 3.0),
             0.005, "kurtosis", "score")  # fmt: skip
    recovery = {"parent_recovery": 1.0, "root_recovery": 0.5, "direction_accuracy": 1.0}
    metas = {i: {"modification": "pruning" if i == "C" else None} for i in ids}
    tree_files.write(folder, {"tree": t, "edges": tree_files.edges(t, metas), "recovery": recovery})
    return folder


def test_a_recovered_tree_is_a_section_and_a_bad_one_a_note(tmp_path):
    sweep = write_sweep(tmp_path, broken=False)
    write_tree(sweep / "tree")
    bad = tmp_path / "bad_tree"
    bad.mkdir()
    (bad / "edges.json").write_text('{"not": "a list"}')
    (bad / "tree.png").write_bytes(b"")
    files = write_report(collect([sweep, bad]), tmp_path / "report", decision_planes=False)
    trees = [s for s in files.sections if s.title == "Recovered lineage tree"]
    assert len(trees) == 2
    good, broken = sorted(trees, key=lambda s: bool(s.notes))
    ((caption, table),) = good.tables
    assert list(table["child"]) == ["C", "G"] and list(table["parent"]) == ["P", "C"]
    assert table["modification"].iloc[0] == "pruning" and pd.isna(table["modification"].iloc[1])
    assert "parent recovery 1.000, root recovery 0.500" in good.text
    ((png, _),) = good.figures
    assert png.parent == tmp_path / "report" and imread(png).shape[1] > 100
    assert broken.notes and "not a list of edges" in broken.notes[0] and not broken.figures
