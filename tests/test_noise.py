"""A run's output is what the user needs: no Lightning SLURM hint outside SLURM, no line per
HTTP request (tests/test_remote.py::test_readme_commands_run_as_written), and `threads`, a
machine setting, in neither the output folder's name nor the config hash."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from hydra import compose, initialize_config_dir

from lineage.config import register_schemas
from lineage.pipeline import config_hash
from lineage.training import make_trainer

CONF = Path(__file__).resolve().parents[1] / "lineage" / "conf"


def test_no_srun_hint_where_srun_exists_but_no_allocation(tmp_path, monkeypatch):
    srun = tmp_path / "srun"
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        make_trainer({"epochs": 1, "accelerator": "cpu", "progress": False})
    assert [str(w.message) for w in seen if "srun" in str(w.message)] == []


FIT = """
import torch, pytorch_lightning as pl
from lineage.training import Classifier, fit
ds = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
dm = pl.LightningDataModule.from_datasets(train_dataset=ds, batch_size=8)
cfg = {"epochs": 1, "accelerator": "cpu", "progress": False, "lr": 0.01}
fit(Classifier(torch.nn.Linear(4, 2), cfg, 2), dm, cfg, seed=0)
print("fitted")
"""


def test_a_whole_fit_prints_no_srun_hint(tmp_path):
    """Lightning's checkpoint connector probes SLURM at every fit, whatever the Trainer's
    environment: the hint must not reach a run's output either."""
    import subprocess
    import sys

    from conftest import HANG_S

    srun = tmp_path / "srun"
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{tmp_path}{os.pathsep}{env['PATH']}"
    r = subprocess.run(
        [sys.executable, "-c", FIT], capture_output=True, text=True, env=env, timeout=HANG_S
    )
    assert r.returncode == 0 and "fitted" in r.stdout, r.stderr[-2000:]
    assert "srun" not in r.stderr


def test_threads_names_no_output_folder_and_changes_no_hash():
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["seed=3", "threads=1"], return_hydra_config=True)
    assert cfg.hydra.job.override_dirname == "seed=3"
    plain = {"seed": 3, "data": {"name": "digits"}}
    assert config_hash({**plain, "threads": 1}) == config_hash(plain)
