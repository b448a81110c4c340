"""`lineage.tree` and `lineage tree` recover a known digits family tree: a parent, a pruned
and a fine-tuned child, a noised grandchild under the pruned child, two independents."""

from __future__ import annotations

import json
import os
import subprocess

import networkx as nx
import pytest
import torch
from conftest import ROOT, lineage_here, python
from nets import fit

import lineage
from lineage import models, tree_files
from lineage.data import build_datamodule

# closeness on fewer points: the tree needs the verdict, not a tight CI
FAST = {"max_points": 120, "min_points": 60, "n_boot": 200, "progress": False}
FAST_CLI = ["closeness.max_points=120", "closeness.min_points=60", "closeness.n_boot=200"]
TRUTH = {"P": None, "C1": "P", "C2": "P", "G": "C1", "I1": None, "I2": None}
MODS = {"C1": ("pruning", 0.5), "C2": ("finetune", 0.5), "G": ("noise", 0.1)}


@pytest.fixture(scope="module")
def data():
    dm = build_datamodule("digits")
    return dm.train.x, dm.train.y, dm.test.x, dm.test.y


@pytest.fixture(scope="module")
def family(data):
    x, y, _, _ = data

    def train(seed):
        torch.manual_seed(seed)
        return fit(models.build("mlp", 10, 1, 8, hidden=[32, 32]), x, y, 3, seed)

    m = {"P": train(0), "I1": train(1), "I2": train(2)}
    for child in ("C1", "C2", "G"):
        mod, ratio = MODS[child]
        m[child] = lineage.derive(m[TRUTH[child]], mod, ratio, data=data).model
    refs = [train(s) for s in range(10, 15)]  # 5 independent references
    return {k: m[k] for k in TRUTH}, refs


@pytest.fixture(scope="module")
def recovered(family, data):
    m, refs = family
    return lineage.tree(m, data[2], data[3], refs, closeness=FAST)


def test_the_known_tree_is_recovered_exactly(recovered):
    t = recovered
    assert [(e.parent, e.child) for e in t.edges] == [("P", "C1"), ("P", "C2"), ("C1", "G")]
    assert t.roots == ["P", "I1", "I2"]
    ev = t.evaluate(TRUTH)
    assert ev["parent_recovery"] == 1.0 and ev["children"] == 3
    assert ev["root_recovery"] == 1.0 and ev["roots"] == 3
    assert ev["direction_accuracy"] == 1.0 and ev["wrong"] == []
    for e in t.edges:
        assert e.p_value <= t.alpha and e.score == pytest.approx(-torch.log10(
            torch.tensor(e.p_value, dtype=torch.float64)).item(), rel=1e-6)  # fmt: skip
    # the chain: the grandchild hangs from its parent, though its grandparent's verdict
    # on it is significant too
    assert t.pairs[("P", "G")].p_value <= t.alpha
    assert t.pairs[("C1", "G")].score > t.pairs[("P", "G")].score
    # kurtosis orients: one judgement per pair (15 pairs of 6 models), none pruned here
    assert len(t.pairs) == 15 and t.pruned == []


def test_shared_calibrations_give_each_pair_its_own_verdict(family, data, recovered):
    """The tree's calibrations share the references in the parent's place (calibrate's
    `share`) and are lean (no e(parent, reference) for the suspect-centred kinds): each
    pair's verdict is still the one a full calibrate and judge give it alone."""
    m, refs = family
    _, _, x, y = data
    for a, b in [k for k in recovered.pairs if k[1] in ("G", "I2")][-3:]:
        cal = lineage.calibrate(m[a], refs, x, y, closeness=FAST)
        v = lineage.judge(m[a], m[b], x, y, calibration=cal)
        assert recovered.pairs[(a, b)].p_value == pytest.approx(v.decision.p_value, rel=1e-9)
    with pytest.raises(lineage.LineageError, match="share: that calibration has other"):
        lineage.calibrate(m["P"], refs[:4], x, y, closeness=FAST, share=cal)


def test_pruning_skips_the_unrelated_pairs_and_keeps_the_related(family, data, recovered):
    """Pruning recall: below the most-agreeing pair of references, only unrelated pairs."""
    m, refs = family
    t = lineage.tree(m, data[2], data[3], refs, prune=0.0, closeness=FAST)
    related = {frozenset((a, b)) for a, b in TRUTH.items() if b}
    related |= {frozenset(("P", "G")), frozenset(("C1", "C2")), frozenset(("C2", "G"))}
    pruned = {frozenset(p) for p in t.pruned}
    assert not related & pruned  # recall 1.0
    assert len(pruned) == 9  # every unrelated pair of the 15
    assert [(e.parent, e.child) for e in t.edges] == [(e.parent, e.child) for e in recovered.edges]
    assert t.roots == recovered.roots


def test_the_candidate_screen_keeps_every_true_pair_and_the_tree(family, data, recovered):
    """candidates=2: each model's 2 nearest in weight space and 2 most-agreeing models. The
    related models of this family are each other's nearest, the independents are not: the
    screen skips pairs, keeps every true parent-child pair, and the tree is unchanged."""
    m, refs = family
    t = lineage.tree(m, data[2], data[3], refs, candidates=2, closeness=FAST)
    assert t.pruned and len(t.pairs) < len(recovered.pairs)
    ev = t.evaluate(TRUTH)
    assert ev["screen_recall"] == 1.0 and recovered.evaluate(TRUTH)["screen_recall"] == 1.0
    assert [(e.parent, e.child) for e in t.edges] == [(e.parent, e.child) for e in recovered.edges]
    for k, p in t.pairs.items():  # a screened pair's verdict is the unscreened one's
        assert p.p_value == pytest.approx(recovered.pairs[k].p_value, rel=1e-9)
    # a permuted copy is at weight gap 0 from its original, an independent far from both
    perm = lineage.derive(m["P"], "permute", 0.9, data=data).model
    assert lineage.trees.weight_gap(m["P"], perm) == pytest.approx(0.0, abs=1e-6)
    assert lineage.trees.weight_gap(m["P"], m["I1"]) > 0.5


def test_a_model_that_cannot_be_a_parent_leaves_the_rest_of_the_tree(family, data, tmp_path):
    """A dead model (all weights zero: one constant answer, no boundary to find) has no
    closeness as a parent: its pairs are listed as not judged, the tree is still made."""
    m, refs = family
    dead = models.build("mlp", 10, 1, 8, hidden=[32, 32])
    with torch.no_grad():
        for p in dead.parameters():
            p.zero_()
    t = lineage.tree({"P": m["P"], "C1": m["C1"], "Z": dead}, data[2], data[3], refs,
                     closeness=FAST)  # fmt: skip
    assert {a for a, _ in t.unjudged} == {"Z"}
    assert all("closeness" in why for why in t.unjudged.values())
    assert [(e.parent, e.child) for e in t.edges] == [("P", "C1")]
    # the command's outputs say so: unjudged.json and a console line a pair
    result = {"tree": t, "edges": tree_files.edges(t, {i: {} for i in t.ids}), "recovery": None}
    tree_files.write(tmp_path, result)
    listed = json.loads((tmp_path / "unjudged.json").read_text())
    assert {(u["parent"], u["child"]) for u in listed} == set(t.unjudged)
    said = [line for line in tree_files.summary(result).splitlines() if "not judged" in line]
    assert len(said) == len(t.unjudged) and all(
        line.startswith("not judged: Z -> ") for line in said
    )


def test_a_journal_resumes_without_judging_a_pair_again(family, data, tmp_path, monkeypatch):
    """An interrupted tree (here: the journal's last line torn) judges only what is left,
    with the same answers; a different model under an old name is judged anew."""
    m, refs = family
    x, y = data[2], data[3]
    sub = {k: m[k] for k in ("P", "C1", "I1")}
    path = tmp_path / "judged.jsonl"
    first = lineage.tree(sub, x, y, refs, closeness=FAST, journal=path)
    lines = path.read_text().splitlines()
    assert len(lines) == len(first.pairs) == 3
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    judged = []
    real = lineage.engine.judge
    monkeypatch.setattr(lineage.engine, "judge", lambda *a, **k: judged.append(1) or real(*a, **k))
    again = lineage.tree(sub, x, y, refs, closeness=FAST, journal=path)
    assert len(judged) == 1
    assert again.pairs == first.pairs and again.edges == first.edges
    judged.clear()
    lineage.tree({**sub, "I1": m["I2"]}, x, y, refs, closeness=FAST, journal=path)
    assert len(judged) == 2  # the pairs of the new model only


def test_bad_input_is_refused(family, data):
    m, refs = family
    with pytest.raises(lineage.LineageError, match="at least 2 models"):
        lineage.tree({"P": m["P"]}, data[2], data[3], refs)
    with pytest.raises(lineage.LineageError, match="needs at least 4"):
        lineage.tree(m, data[2], data[3], refs[:3])
    with pytest.raises(lineage.LineageError, match="direction must be one of"):
        lineage.tree(m, data[2], data[3], refs, direction="age")
    with pytest.raises(lineage.LineageError, match="candidates must be at least 1"):
        lineage.tree(m, data[2], data[3], refs, candidates=0)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return python("-m", "lineage", "tree", *args, env=env)


@pytest.fixture(scope="module")
def files(family, tmp_path_factory):
    m, refs = family
    d = tmp_path_factory.mktemp("tree")
    (d / "zoo").mkdir()
    for name, model in m.items():
        meta = {"id": name, "data": {"name": "digits"}, "parent_id": TRUTH[name]}
        if name in MODS:
            meta["modification"] = MODS[name][0]
        models.save(model, d / "zoo" / f"{name}.safetensors", meta)
    ref_args = []
    for i, r in enumerate(refs):
        path = models.save(r, d / f"r{i}.safetensors", {"id": f"r{i}", "data": {"name": "digits"}})
        ref_args += ["--reference", str(path)]
    return d, ref_args


def cli_tree(zoo, refs, out, recovered):
    """`lineage tree ZOO --out OUT`, which must succeed with the API's edges: the run and
    its edges.json."""
    r = cli(str(zoo), *refs, "--out", str(out), *FAST_CLI)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads((out / "edges.json").read_text())
    assert [(e["parent"], e["child"]) for e in got] == [
        (e.parent, e.child) for e in recovered.edges
    ]
    return r, got


def test_the_cli_writes_the_apis_tree(files, recovered):
    d, refs = files
    out = d / "out"
    r, got = cli_tree(d / "zoo", refs, out, recovered)
    want = recovered.edges
    for g, w in zip(got, want):
        assert g["score"] == pytest.approx(w.score, rel=1e-6)
        assert g["p_value"] == pytest.approx(w.p_value, rel=1e-6)
        assert g["decided_by"] == w.decided_by
        assert g["modification"] == MODS[g["child"]][0]
    graph = nx.read_graphml(out / "tree.graphml")
    assert sorted(graph.edges) == sorted((e.parent, e.child) for e in want)
    assert graph.edges["P", "C1"]["modification"] == "pruning"
    assert (out / "tree.png").read_bytes()[:4] == b"\x89PNG"
    rec = json.loads((out / "recovery.json").read_text())
    assert (rec["parent_recovery"], rec["root_recovery"], rec["direction_accuracy"]) == (1, 1, 1)
    assert "roots: I1, I2, P" in r.stdout  # in the order of the folder's files
    assert "parent recovery 1.000 (3 models), root recovery 1.000 (3)" in r.stdout


def test_files_without_lineage_records_give_the_same_tree(family, files, recovered, tmp_path):
    """The records only score the tree: the same files with no parent or modification
    recovered the same edges, and there is nothing to score them against."""
    m, _ = family
    _, refs = files
    (tmp_path / "zoo").mkdir()
    for name, model in m.items():
        models.save(model, tmp_path / "zoo" / f"{name}.safetensors",
                    {"id": name, "data": {"name": "digits"}})  # fmt: skip
    out = tmp_path / "out"
    r, got = cli_tree(tmp_path / "zoo", refs, out, recovered)
    assert [e["p_value"] for e in got] == pytest.approx([e.p_value for e in recovered.edges])
    assert all(e["modification"] is None for e in got)
    assert not (out / "recovery.json").exists() and "parent recovery" not in r.stdout


def test_the_cli_refuses_bad_input_in_one_line(family, files, tmp_path):
    d, refs = files
    one = cli(str(d / "zoo" / "P.safetensors"), *refs)  # a real process; the rest in this one
    few = lineage_here("tree", str(d / "zoo"), "--references", "2")
    zero = lineage_here("tree", str(d / "zoo"), *refs, "--candidates", "0")
    missing = lineage_here("tree", str(d / "zoo"), str(tmp_path / "nope.safetensors"), *refs)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    corrupt = lineage_here("tree", str(d / "zoo" / "P.safetensors"), str(bad), *refs)
    m, _ = family
    other = models.save(m["I1"], tmp_path / "I1.safetensors", {"data": {"name": "wine"}})
    tasks = lineage_here("tree", str(d / "zoo" / "P.safetensors"), str(other), *refs)
    for r, says in [
        (one, "at least 2 model files"),
        (few, "2 references: the verdict needs at least 4"),
        (zero, "candidates must be at least 1"),
        (missing, "model file not found"),
        (corrupt, "bad.safetensors"),
        (tasks, "the models were trained on different tasks"),
    ]:
        assert r.returncode == 2, r.stderr[-2000:]
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
