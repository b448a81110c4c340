"""`lineage compare` on every file form an auditor is handed gives the API's verdict and
numbers for the same pair: the project's own files, plain safetensors and PyTorch state
dicts with `--arch`, and Hugging Face folders. A pickle that would run code is refused
before anything in it runs."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import ROOT, python
from nets import ResCNN, fit
from safetensors.torch import save_file

import lineage
from lineage import models
from lineage.data import build_datamodule
from lineage.utils import flatten

pytestmark = pytest.mark.slow

# the fewest references the p-value verdict calibrates with (determination.min_references)
N_REFS = 4
FAST = ["closeness.max_points=120", "closeness.min_points=60", "closeness.n_boot=200"]
FAST_API = {"max_points": 120, "min_points": 60, "n_boot": 200}
KEYS = [
    "verdict.is_lineage",
    "evidence.basin.barrier",
    "evidence.basin.threshold",
    "evidence.basin.route",
    "evidence.closeness.score",
    "evidence.closeness.match_rate",
    "evidence.closeness.n_points",
]


# what builds the ResCNN files: a Hydra `_target_` and its arguments
ARCH = ROOT / "tests" / "rescnn.yaml"


@pytest.fixture(scope="module")
def data():
    dm = build_datamodule("digits")
    return dm.train.x, dm.train.y, dm.test.x, dm.test.y


def cli(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    # one thread, as in this process (conftest): reductions then sum in the same order
    paths = [str(ROOT / "tests"), *([str(pythonpath)] if pythonpath else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "WANDB_MODE": "disabled"}
    env["OMP_NUM_THREADS"] = "1"
    return python("-m", "lineage", "compare", *args, env=env)


def family(make, data, epochs=3):
    x, y, xt, yt = data
    torch.manual_seed(0)
    parent = fit(make(), x, y, epochs, 0)
    refs = []
    for s in range(1, N_REFS + 1):
        torch.manual_seed(s)
        refs.append(fit(make(), x, y, epochs, s))
    suspect = lineage.derive(parent, "noise", 0.05, data=data).model
    return parent, suspect, refs


def named(parent, suspect, refs):
    return [
        ("parent", parent),
        ("suspect", suspect),
        *[(f"r{i}", m) for i, m in enumerate(refs, 1)],
    ]


def ref_args(paths) -> list[str]:
    return [a for p in paths for a in ("--reference", str(p))]


def api(parent, suspect, refs, data):
    _, _, xt, yt = data
    cal = lineage.calibrate(parent, refs, xt, yt, closeness=FAST_API)
    return lineage.judge(parent, suspect, xt, yt, calibration=cal)


def assert_same(r: subprocess.CompletedProcess, want, rel: float = 1e-6) -> None:
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    flat = flatten(want.to_dict())
    for k in KEYS:
        if isinstance(flat[k], float):
            assert got[k] == pytest.approx(flat[k], rel=rel, abs=1e-9), k
        else:
            assert got[k] == flat[k], k
    assert got["calibrated"] is True and got["references"] == N_REFS


def test_project_files(tmp_path, data):
    make = lambda: models.build("mlp", 10, 1, 8, hidden=[32, 32])  # noqa: E731
    parent, suspect, refs = family(make, data)
    meta = {"data": {"name": "digits"}}
    p, s, *r = (
        str(models.save(m, tmp_path / f"{n}.safetensors", {"id": n, **meta}))
        for n, m in named(parent, suspect, refs)
    )
    res = cli(p, s, *ref_args(r), "--json", *FAST)
    assert_same(res, api(parent, suspect, refs, data))


@pytest.fixture(scope="module")
def rescnn(data):
    parent, suspect, refs = family(lambda: ResCNN(10, width=4), data)
    return parent, suspect, refs, api(parent, suspect, refs, data)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_plain_state_dicts_with_arch(tmp_path, rescnn, suffix):
    parent, suspect, refs, want = rescnn
    paths = []
    for n, m in named(parent, suspect, refs):
        path = tmp_path / f"{n}{suffix}"
        if suffix == ".pt":
            torch.save(m.state_dict(), path)
        else:
            save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
        paths.append(str(path))
    args = [paths[0], paths[1], *ref_args(paths[2:])]
    res = cli(*args, "--arch", str(ARCH), "--data", "digits", "--json", *FAST)
    assert_same(res, want)
    # the same files without --arch: one line saying what is missing
    r = cli(paths[0], paths[1], "--data", "digits")
    assert r.returncode == 2 and "plain state dict: say what builds it with --arch" in r.stderr


def test_an_arch_factory_by_import_path(tmp_path, rescnn):
    parent, suspect, refs, want = rescnn
    (tmp_path / "nets_w4.py").write_text(
        "from nets import ResCNN\n\ndef narrow():\n    return ResCNN(10, width=4)\n"
    )
    for n, m in named(parent, suspect, refs):
        torch.save(m.state_dict(), tmp_path / f"{n}.pt")
    f = [str(tmp_path / f"{n}.pt") for n, _ in named(parent, suspect, refs)]
    res = cli(*f[:2], *ref_args(f[2:]), "--data", "digits", "--json",
              "--arch", "nets_w4:narrow", *FAST, pythonpath=tmp_path)  # fmt: skip
    assert_same(res, want)


class Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, rescnn):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    with bad.open("wb") as f:
        pickle.dump({"weight": Exploit(marker)}, f)
    good = tmp_path / "parent.pt"
    torch.save(rescnn[0].state_dict(), good)
    r = cli(str(good), str(bad), "--arch", str(ARCH), "--data", "digits")
    assert r.returncode == 2
    assert "evil.pt: refused: it holds Python objects that only a full unpickling" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists()  # the payload never ran


def test_hugging_face_folders(tmp_path, data):
    pytest.importorskip("transformers")
    from lineage.models.hf import vit

    parent, suspect, refs = family(lambda: vit(10, 1, (8, 8)), data, epochs=3)
    dirs = []
    for n, m in named(parent, suspect, refs):
        m.model.save_pretrained(tmp_path / n)  # Logits wraps the transformers model
        dirs.append(str(tmp_path / n))
    res = cli(*dirs[:2], *ref_args(dirs[2:]), "--data", "digits",
              "--json", *FAST)  # fmt: skip
    # A model transformers rebuilds from its folder computes the same logits, yet its
    # attention kernels round differently in the last bits along the attack rays (scores
    # differ by ~1e-6 of their value, far below the search's tol): the same verdict and
    # points, numbers to 1e-4.
    assert_same(res, api(parent, suspect, refs, data), rel=1e-4)
