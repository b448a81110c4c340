import os
import sys
from pathlib import Path

import pytest
import torch

from lineage.config import RootConf

ROOT = Path(__file__).resolve().parents[1]
# a job trains its parent and this many references (RootConf.n_independent)
N_REFERENCES = RootConf().n_independent
SHARED_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Tiny models: one thread avoids oversubscription when test processes run side by side.
torch.set_num_threads(1)
# Under `pytest -n K` each worker gets its own share of the cores; the CLI subprocesses a
# test starts inherit it, so their default `threads` (the cores they may use) cannot
# oversubscribe the machine either.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and hasattr(os, "sched_setaffinity"):
    _cpus = sorted(os.sched_getaffinity(0))
    _k = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if len(_cpus) >= _k > 1:
        os.sched_setaffinity(0, _cpus[int(_worker[2:]) % _k :: _k])


@pytest.fixture(scope="session")
def digits_dm():
    from lineage.data import build_datamodule

    return build_datamodule("digits", limit=600, batch_size=64)


FAST_TRAIN = {
    "epochs": 4,
    "lr": 3e-3,
    "optimizer": "adam",
    "scheduler": "none",
    "accelerator": "cpu",
    "progress": False,
}


@pytest.fixture(scope="session")
def fast_train():
    return dict(FAST_TRAIN)


def run_py(*overrides: str, cwd: Path = ROOT, timeout: int = 300, env: dict | None = None):
    """Run the real CLI in a subprocess, as a user would."""
    import subprocess

    e = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=e,
    )
