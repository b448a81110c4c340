"""A kind of evidence defined only in the tests (tests/agreement_evidence.py) takes part in
everything: the API's calibrate and judge, the verdict, run.py's metrics.json and W&B run,
`lineage report` and `lineage compare --json`, with no file of lineage/ edited."""

import json
import os

import pytest
import torch
from conftest import ROOT, python
from torch import nn

import lineage
from lineage.evaluate import evidence


@pytest.fixture
def agreement():
    import agreement_evidence  # registers "agreement"

    yield agreement_evidence
    evidence.unregister("agreement")


def _mlp(seed, x, y):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(8):
        for i in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x[i]), y[i]).backward()
            opt.step()
    return m.eval()


def test_the_api_and_the_verdict_use_a_registered_kind(agreement, digits_dm):
    x, y = digits_dm.train.x, digits_dm.train.y
    xt, yt = digits_dm.test.x, digits_dm.test.y
    parent = _mlp(0, x, y)
    refs = [_mlp(s, x, y) for s in range(1, 5)]
    suspect = lineage.derive(parent, "noise", 0.05, data=(x, y, xt, yt)).model
    cal = lineage.calibrate(parent, refs, xt, yt, closeness={"max_points": 80, "min_points": 40})
    assert all("agreement" in r for r in cal.results)  # measured for every reference
    v = lineage.judge(parent, suspect, xt, yt, calibration=cal)
    assert evidence.names()[-1] == "agreement"
    assert v.evidence["agreement"].score > max(r["agreement"].score for r in cal.results)
    p = {k: q for k, q in v.decision.p.items() if q is not None}
    assert "agreement" in p and len(p) == len(evidence.on_by_default())  # Bonferroni over all
    assert v.decision.p_value == pytest.approx(min(1.0, len(p) * min(p.values())))
    assert "agreement: score" in v.explain(cal)
    flat = lineage.utils.flatten(v.to_dict())
    assert flat["evidence.agreement.n_points"] == 256
    # the same suspect without the kind: three evidences, another combined p
    evidence.unregister("agreement")
    without = lineage.judge(
        parent, suspect, xt, yt, references=refs, closeness={"max_points": 80, "min_points": 40}
    )
    assert "agreement" not in without.decision.p
    assert without.decision.p["closeness"] == pytest.approx(v.decision.p["closeness"])


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "WANDB_MODE": "offline"}


def _cli(*args, cwd):
    return python(*args, cwd=cwd, env=_env())


def test_run_report_wandb_and_compare_carry_a_plugin_kind(tmp_path):
    from wandb_offline import summary_and_history

    zoo = tmp_path / "zoo"
    common = [
        "plugins=[agreement_evidence]",
        "+agreement.points=128",  # the plug-in's own group, set on the command line
        "data.limit=600",
        "data.epochs=4",
        "n_independent=4",
        f"paths.zoo={zoo}",
        "closeness.max_points=80",
        "closeness.min_points=40",
    ]
    r = _cli(str(ROOT / "run.py"), "modification=noise", "ratio=0.05", *common, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (mpath,) = (tmp_path / "outputs" / "runs").rglob("metrics.json")
    m = json.loads(mpath.read_text())
    assert m["derived.evidence.agreement.n_points"] == 128
    assert 0 <= m["derived.verdict.p.agreement"] <= 1
    assert "independent.0.evidence.agreement.score" in m
    assert "time.agreement_s" in m
    summary, _, _ = summary_and_history(mpath.parent)
    assert summary["derived.verdict.p.agreement"] == pytest.approx(m["derived.verdict.p.agreement"])

    rep = _cli("-m", "lineage", "report", str(tmp_path / "outputs" / "runs"), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-3000:]
    md = next((tmp_path / "outputs" / "runs").rglob("report.md")).read_text()
    assert "p agreement" in md and "agreement score" in md

    args = [m["parent.path"], m["derived.path"], "--references", "4", "--zoo", str(zoo)]
    c = _cli("-m", "lineage", "compare", *args, "--json", *common[:2], *common[-2:], cwd=tmp_path)
    assert c.returncode == 0, c.stderr[-3000:]
    out = json.loads(c.stdout)
    assert out["evidence.agreement.score"] == pytest.approx(m["derived.evidence.agreement.score"])
    assert out["verdict.p.agreement"] == pytest.approx(m["derived.verdict.p.agreement"])


@pytest.mark.parametrize(
    "args, words",
    [
        (["plugins=[agreement_evidence]", "+agreement.points=0"], "agreement.points"),
        (["+agreement.points=5"], "unknown key 'agreement'"),
        (["plugins=[no_such_module_xyz]"], "cannot import 'no_such_module_xyz'"),
    ],
)
def test_a_plugin_groups_options_are_checked_before_the_job(tmp_path, args, words):
    r = _cli(str(ROOT / "run.py"), *args, f"paths.zoo={tmp_path / 'zoo'}", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert words in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not list(tmp_path.rglob("*.safetensors")), "a model was trained before the check"


def test_three_references_leave_the_verdict_undetermined_not_false(digits_dm):
    x, y = digits_dm.train.x, digits_dm.train.y
    xt, yt = digits_dm.test.x, digits_dm.test.y
    parent = _mlp(0, x, y)
    refs = [_mlp(s, x, y) for s in range(1, 4)]
    v = lineage.judge(
        parent, parent, xt, yt, references=refs, closeness={"max_points": 60, "min_points": 30}
    )
    assert v.is_lineage is None and v.calibrated is False
    assert v.to_dict()["verdict"]["is_lineage"] is None
    assert v.explain().startswith("undetermined")
    assert "3 references, and p-values need at least 4" in v.explain()
