"""A user's own model, from `run.py` to `lineage compare`: the README's path for a
`_target_` architecture, with `--arch` the one flag compare asks for."""

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import HANG_S, N_REFERENCES, run_py

MY_NETS = """
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, in_features, num_classes, width=32):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.ReLU())
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.classifier(self.body(x))
"""
SMALL = [
    "closeness.max_points=200",
    "closeness.min_points=60",
    "closeness.batch_points=60",
    "closeness.n_boot=200",
    "determination.probe_points=360",
]


@pytest.mark.heavy  # make test-all: 3 lineage runs and a compare (CI: 10-minute suite)
def test_a_target_model_from_run_py_into_compare_with_arch_alone(tmp_path):
    import subprocess

    console = Path(sys.executable).parent / "lineage"
    if not console.exists():
        pytest.skip("the lineage console script is not installed beside this Python")
    (tmp_path / "my_nets.py").write_text(MY_NETS)
    ours = os.environ.get("PYTHONPATH", "")
    # the run: my_nets importable as the README says (run from its folder, or PYTHONPATH)
    r = run_py(
        "experiment=smoke",
        "model._target_=my_nets.TinyNet",
        "+model.width=24",
        "data.limit=500",
        "data.epochs=3",
        "modification=finetune",
        "ratio=0.5",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"PYTHONPATH": os.pathsep.join(p for p in (str(tmp_path), ours) if p)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    parent, derived = (Path(m[k]).relative_to(tmp_path) for k in ("parent.path", "derived.path"))
    # the audit: the console script, from the folder that holds my_nets.py, no PYTHONPATH to it
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"PYTHONPATH": ours} if ours else {})
    a = subprocess.run(
        [str(console), "compare", str(parent), str(derived), "--arch", "my_nets.TinyNet", "--json"]
        + SMALL,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert a.returncode == 0, a.stderr[-3000:]
    out = json.loads(a.stdout.strip().splitlines()[-1])
    assert (out["references"], out["calibrated"]) == (N_REFERENCES, True)
    assert out["verdict"] == "lineage" and m["derived.verdict.is_lineage"] is True
    # the references the run trained, found in its zoo (the recorded width 24 reused)
    assert a.stderr.count(" loaded, accuracy") == N_REFERENCES, a.stderr[-3000:]
