"""The public API on models and data that only the tests define (tests/nets.py): a residual
CNN with BatchNorm and a channel concatenation on digits, and an MLP with LayerNorm on the
tabular breast-cancer task. Derivatives are lineage, independent models are not, and the
permuted copy shares the parent's basin only when alignment undoes the permutation."""

from __future__ import annotations

import pytest
import torch
from conftest import python
from nets import ResCNN, TabMLP, fit
from sklearn.datasets import load_breast_cancer, load_digits

import lineage

pytestmark = pytest.mark.slow

FAST = {"max_points": 150, "min_points": 60, "n_boot": 200}
DERIVATIVES = {  # name -> (modification, ratio, options)
    "finetune": ("finetune", 0.5, {"epochs": 2}),
    "pruning": ("pruning", 0.3, {}),
    "structured pruning": ("pruning", 0.25, {"method": "l1_structured"}),
    "permute": ("permute", 1.0, {}),
    "noise": ("noise", 0.05, {}),
    "int8": ("quantize", 0.0, {"bits": 8}),
}


def split(x: torch.Tensor, y: torch.Tensor):
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    k = len(y) // 5
    return x[perm[k:]], y[perm[k:]], x[perm[:k]], y[perm[:k]]


def digits():
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
    return split(x, torch.tensor(d.target))


def breast_cancer():
    d = load_breast_cancer()
    x = torch.tensor(d.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)  # standardised features
    return split(x, torch.tensor(d.target))


FAMILIES = {
    "residual cnn": (lambda: ResCNN(10, width=4), digits, 5),
    "tabular mlp": (lambda: TabMLP(30, 2), breast_cancer, 60),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    make, data, epochs = FAMILIES[request.param]
    x, y, xt, yt = data()

    def trained(seed: int):
        torch.manual_seed(seed)
        return fit(make(), x, y, epochs, seed)

    parent = trained(0)
    references = [trained(s) for s in (1, 2, 3, 4, 5, 6)]  # the default 6
    independents = [trained(s) for s in (11, 12, 13)]
    derived = {
        name: lineage.derive(parent, mod, ratio, data=(x, y, xt, yt), **opts)
        for name, (mod, ratio, opts) in DERIVATIVES.items()
    }
    cal = lineage.calibrate(parent, references, xt, yt, closeness=FAST)
    return parent, derived, independents, cal, xt, yt, references


def test_every_derivative_is_lineage(family):
    parent, derived, _, cal, xt, yt, _ = family
    for name, d in derived.items():
        v = lineage.judge(parent, d.model, xt, yt, calibration=cal, record=d.record)
        assert v.is_lineage, f"{name}: {v.explain()}"
        assert v.calibrated


def test_independent_models_are_not(family):
    parent, _, independents, cal, xt, yt, _ = family
    for i, m in enumerate(independents):
        v = lineage.judge(parent, m, xt, yt, calibration=cal)
        assert not v.is_lineage, f"independent {i}: {v.explain()}"
    assert not any(r.is_lineage for r in cal.references)  # leave-one-out, as well


def test_the_permuted_copy_shares_the_basin_only_with_alignment(family):
    """The basin evidence, each time against references measured the same way: aligned,
    the permuted copy's barrier is 0 where independent models' are not; unaligned, it is
    as high as theirs (its function is the parent's, so closeness sees it regardless)."""
    parent, derived, _, cal, xt, yt, references = family
    perm = derived["permute"].model
    assert derived["permute"].effect["max_output_diff"] < 1e-4  # the same function
    aligned = lineage.judge(parent, perm, xt, yt, calibration=cal)
    raw_cal = lineage.calibrate(
        parent, references, xt, yt, determination={"align": False}, closeness=FAST
    )
    raw = lineage.judge(parent, perm, xt, yt, calibration=raw_cal)
    a, r = aligned.evidence["basin"], raw.evidence["basin"]
    assert a.aligned and not r.aligned
    assert a.barrier == 0 < r.barrier
    assert aligned.decision.p["basin"] < raw.decision.p["basin"]
    assert raw.decision.says["basin"] is False, raw
    if isinstance(family[0], ResCNN):
        # On breast cancer independent MLPs are nearly linearly connected too (barriers of
        # a few % of the loss, at the barrier's floor), so a 0 is no significant outlier
        # by itself there and closeness carries the verdict; on the CNN it is.
        assert aligned.decision.says["basin"] is True, aligned


def test_structured_pruning_removed_units_and_judging_maps_them_back(family):
    parent, derived, _, cal, xt, yt, _ = family
    d = derived["structured pruning"]
    n_params = sum(p.numel() for p in d.model.parameters())
    assert n_params < sum(p.numel() for p in parent.parameters())
    assert d.record["kept_channels"]
    v = lineage.judge(parent, d.model, xt, yt, calibration=cal, record=d.record)
    assert v.evidence["basin"].route.startswith("basin+pruned-map")


# ---------------------------------------------------------------- through run.py


def run_py_env():
    import os

    from conftest import ROOT

    return {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "WANDB_MODE": "disabled"}


def test_a_target_model_on_the_tabular_task_runs_and_sweeps_and_reports(tmp_path):
    import json

    from conftest import ROOT

    common = [
        "model._target_=nets.tab_mlp",
        "data=breast_cancer",
        "data.epochs=10",
        "logger=none",
        f"paths.zoo={tmp_path / 'zoo'}",
        "closeness.max_points=120",
        "closeness.min_points=60",
    ]

    def run(*args):
        return python(str(ROOT / "run.py"), *args, *common, cwd=tmp_path, env=run_py_env())

    r = run("modification=noise", "ratio=0.1")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = (tmp_path / "outputs" / "runs").rglob("metrics.json")
    (m,) = [json.loads(p.read_text()) for p in runs]
    assert (m["model"], m["data"]) == ("nets.tab_mlp", "breast_cancer")
    assert m["derived.verdict.is_lineage"] is True
    assert m["parent.accuracy"] > 0.9  # the factory got the task: 30 features, 2 classes
    r = run("-m", "modification=finetune,pruning,noise,quantize")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "4 jobs, 4 ok" in r.stdout
    sweep = tmp_path / "outputs" / "sweeps" / "default"
    assert len(list(sweep.glob("*/metrics.json"))) == 4
    rep = python(str(ROOT / "scripts" / "report.py"), str(sweep), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-3000:]
    html = (sweep / "report" / "report.html").read_text()
    assert html.count("nets.tab_mlp") >= 1 and "breast_cancer" in html


def test_a_target_dataset_composes_like_a_registered_one(tmp_path):
    import json

    from conftest import ROOT

    r = python(
        str(ROOT / "run.py"),
            "data._target_=nets.blobs",
            "+data.n=400",
            "model.hidden=[32,32]",
            "data.epochs=10",
            "modification=pruning",
            "ratio=0.3",
            "logger=none",
            "closeness.max_points=120",
            "closeness.min_points=60",
            f"paths.zoo={tmp_path / 'zoo'}",
        cwd=tmp_path,
        env=run_py_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (m,) = [json.loads(p.read_text()) for p in (tmp_path / "outputs").rglob("metrics.json")]
    assert m["data"] == "blobs" and m["derived.verdict.is_lineage"] is True
    assert abs(m["derived.sparsity"] - 0.3) < 0.01


def test_a_hugging_face_vit_is_pruned_and_noised_in_a_sweep(tmp_path):
    """The weight edits that reach into its attention and LayerNorm tensors; the README's
    own `model=hf_vit modification=quantize` command (tests/test_readme.py) covers
    quantization, and fine-tuning is the one trainer every model shares."""

    from conftest import ROOT

    pytest.importorskip("transformers")
    r = python(
        str(ROOT / "run.py"),
            "-m",
            "model=hf_vit",
            "modification=pruning,noise",
            "data.limit=400",
            "data.epochs=5",
            "logger=none",
            "closeness.max_points=100",
            "closeness.min_points=50",
            f"paths.zoo={tmp_path / 'zoo'}",
        cwd=tmp_path,
        env=run_py_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 jobs, 2 ok" in r.stdout and r.stdout.count(" lineage ") == 2, r.stdout
