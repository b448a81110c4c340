import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lineage.config import RootConf

ROOT = Path(__file__).resolve().parents[1]
# a job trains its parent and this many references (RootConf.n_independent)
N_REFERENCES = RootConf().n_independent
SHARED_DATA = ROOT.parent / "shared" / "data"
# The one limit a test puts on time: a hang guard, far (10x+) above the slowest honest run of
# anything a test waits for (a CLI job, a pip install) on a loaded 2-core machine. A test never
# asserts how fast the machine is; speed goals live in benchmarks/.
HANG_S = 1800
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


def run_py(*overrides: str, cwd: Path = ROOT, timeout: int = HANG_S, env: dict | None = None):
    """Run the real CLI in a subprocess, as a user would."""
    e = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=e,
    )


def _hung(e: subprocess.TimeoutExpired) -> str:
    cmd = e.cmd if isinstance(e.cmd, str) else " ".join(map(str, e.cmd))
    return f"hung: {cmd} (no exit within {e.timeout:g} s)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    try:
        return (yield)
    except subprocess.TimeoutExpired as e:
        pytest.fail(_hung(e), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        return (yield)
    except subprocess.TimeoutExpired as e:
        pytest.fail(_hung(e), pytrace=False)


# ------------------------------------------------------------ a loaded machine, on purpose

BURN_ENV = "LINEAGE_TEST_BURN"


class Burners:
    """`n` processes that spin a core each, so the suite meets the load a shared machine has
    (`make test-loaded`): a test that passes only on a quiet machine is timing it."""

    def __init__(self, n: int):
        self.procs = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)
        ]

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def pytest_addoption(parser):
    parser.addoption(
        "--burn",
        type=int,
        default=int(os.environ.get(BURN_ENV) or 0),
        help=f"busy-loop processes beside the whole session (default: ${BURN_ENV} or 0)",
    )


def pytest_configure(config):
    # once per session: in the xdist controller (or the lone process), never in its workers
    n = config.getoption("--burn")
    if n > 0 and not hasattr(config, "workerinput"):
        config._lineage_burners = Burners(n)


def pytest_unconfigure(config):
    burners = getattr(config, "_lineage_burners", None)
    if burners is not None:
        burners.stop()
