"""A non-editable install works away from the checkout: `pip install .` into a fresh venv,
then `lineage run` and `lineage compare` from an empty folder, with the configs the wheel
ships (pkg://lineage.conf) and no file of the checkout on the path.

The fresh venv gets the project's dependencies from the test's own environment through a
.pth line (nothing downloads), and the package itself only through `pip install .`.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HANG_S, ROOT

pytestmark = pytest.mark.slow

FAST = ["logger=none", "data.limit=300", "data.epochs=3", "n_independent=4"]
SMALL = ["determination.probe_points=200", "closeness.max_points=100", "closeness.min_points=50"]


def sh(argv: list[str], cwd: Path, env: dict[str, str], timeout: int = HANG_S):
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{argv}\n{(r.stdout + r.stderr)[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("install")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the dependencies (torch, hydra, ...) from this environment; an editable install of
    # lineage there is a finder hook in a .pth, which a .pth path line does not run
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env.update(WANDB_MODE="disabled", OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0")
    sh(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(ROOT),
        ],
        cwd=base,
        env=env,
    )
    empty = base / "elsewhere"
    empty.mkdir()
    return venv, empty, env


def test_the_installed_package_is_a_copy_with_its_configs(installed):
    venv, empty, env = installed
    code = (
        "import lineage, lineage.conf, pathlib; p = pathlib.Path(lineage.__file__).parent; "
        "print(p); print(len(list((p / 'conf').rglob('*.yaml'))))"
    )
    r = sh([str(venv / "bin" / "python"), "-c", code], cwd=empty, env=env)
    where, n_yaml = r.stdout.split()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(ROOT)
    assert int(n_yaml) == len(list((ROOT / "lineage" / "conf").rglob("*.yaml")))


def test_lineage_run_then_compare_from_an_empty_folder(installed):
    venv, empty, env = installed
    lineage = str(venv / "bin" / "lineage")
    zoo = empty / "zoo"
    sh([lineage, "run", "experiment=smoke", *FAST, *SMALL, f"paths.zoo={zoo}"], cwd=empty, env=env)
    (metrics,) = (empty / "outputs").rglob("metrics.json")
    m = json.loads(metrics.read_text())
    assert m["derived.verdict.is_lineage"] is True
    assert m["derived.verdict.n_references"] == 4
    refs = [m[f"independent.{i}.path"] for i in range(4)]
    r = sh(
        [lineage, "compare", m["parent.path"], m["derived.path"], "--json"]
        + [a for p in refs for a in ("--reference", p)]
        + SMALL,
        cwd=empty,
        env=env,
    )
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["verdict.is_lineage"] is True and out["references"] == 4
    # the same points and verdict; distances agree to far below the search's tol (1e-5),
    # the last bits following the batch each process evaluates them in
    assert out["evidence.closeness.score"] == pytest.approx(
        m["derived.evidence.closeness.score"], rel=1e-6
    )
