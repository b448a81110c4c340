"""Threads per job: the cores are shared among the launcher's jobs and among the lineage
jobs running on this machine (lineage.runtime)."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import HANG_S

from lineage import runtime


@pytest.fixture
def four_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "JOBS_DIR", tmp_path / "jobs")
    monkeypatch.setattr(runtime, "cores", lambda: 4)
    n = torch.get_num_threads()
    yield tmp_path / "jobs"
    runtime.end_job()
    torch.set_num_threads(n)


def test_a_job_alone_takes_every_core_and_an_explicit_setting_wins(four_cores):
    assert runtime.start_job(None) == 4 and torch.get_num_threads() == 4
    assert (four_cores / f"{os.getpid()}.pid").exists()
    runtime.end_job()
    assert not (four_cores / f"{os.getpid()}.pid").exists()
    assert runtime.start_job(3) == 3
    assert runtime.start_job(None, parallel_jobs=2) == 2  # a joblib sweep of two


def test_jobs_of_other_processes_share_the_cores_and_dead_ones_do_not(four_cores):
    four_cores.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (four_cores / f"{other.pid}.pid").touch()
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
        (four_cores / f"{dead}.pid").touch()
        assert runtime.start_job(None) == 2  # this job and the sleeping one
        assert not (four_cores / f"{dead}.pid").exists()  # the stale file is removed
        other.kill()
        other.wait()
        assert runtime.rebalance() == 4  # the other job ended: its cores come back
    finally:
        other.kill()


# A SLURM job bound to its cores (task/affinity, task/cgroup), as SLURM starts it: the
# affinity set to the allocation and SLURM_CPUS_PER_TASK in the environment.
SLURM_JOB = """
import os, sys
from pathlib import Path
from lineage import runtime
os.sched_setaffinity(0, {0, 1})
runtime.JOBS_DIR = Path(sys.argv[1])
print(runtime.start_job(None, parallel_jobs=int(sys.argv[2])))
"""


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs 2 cores"
)
@pytest.mark.parametrize("others", [0, 3])
def test_a_slurm_job_takes_its_allocation_whatever_other_jobs_run(tmp_path, others):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    sleepers = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        for _ in range(others)
    ]
    try:
        for p in sleepers:  # other lineage jobs on any core, this job's included
            (jobs / f"{p.pid}.pid").write_text("0 1\n")
        env = {**os.environ, "SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "2"}
        r = subprocess.run(
            [sys.executable, "-c", SLURM_JOB, str(jobs), "8"],
            capture_output=True, text=True, env=env, timeout=HANG_S,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.split()[-1] == "2"
        # the same job outside SLURM shares these cores with the other jobs (and its
        # launcher's 8): one thread
        env.pop("SLURM_JOB_ID")
        r = subprocess.run(
            [sys.executable, "-c", SLURM_JOB, str(jobs), "8"],
            capture_output=True, text=True, env=env, timeout=HANG_S,
        )  # fmt: skip
        assert r.stdout.split()[-1] == "1"
    finally:
        for p in sleepers:
            p.kill()
            p.wait()


def test_jobs_bound_to_other_cores_share_none_of_ours(four_cores, monkeypatch):
    four_cores.mkdir()
    monkeypatch.setattr(runtime, "_affinity", lambda: {0, 1, 2, 3})
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (four_cores / f"{other.pid}.pid").write_text("4 5\n")  # taskset to cores 4-5
        assert runtime.start_job(None) == 4
        (four_cores / f"{other.pid}.pid").write_text("3 4\n")  # one core in common
        assert runtime.rebalance() == 2
    finally:
        other.kill()
        other.wait()
    runtime.end_job()
    assert runtime.start_job(None) == 4
    assert (four_cores / f"{os.getpid()}.pid").read_text().split() == ["0", "1", "2", "3"]


def _sleeper(one: float, more: float):
    """A step whose cost depends on the thread count it runs with."""
    import time

    def step():
        time.sleep(one if torch.get_num_threads() == 1 else more)

    return step


def test_settle_picks_the_faster_count_by_timing_the_step(four_cores):
    runtime.start_job(None)
    assert runtime.settle(_sleeper(0.001, 0.03)) == 1  # a second thread only slows it
    assert torch.get_num_threads() == 1
    assert runtime.settle(_sleeper(0.03, 0.001)) == 4  # a big model gains from 4
    assert torch.get_num_threads() == 4


def test_settle_leaves_an_explicit_setting_and_the_random_state_alone(four_cores):
    runtime.start_job(3)
    assert runtime.settle(_sleeper(0.001, 0.03)) == 3
    runtime.start_job(None)
    before = torch.get_rng_state()
    runtime.settle(lambda: torch.rand(3))
    assert torch.equal(torch.get_rng_state(), before)


def test_training_settles_its_threads_without_changing_what_it_learns(four_cores, monkeypatch):
    """The probe at the first batch runs the model in eval mode without gradients: the
    model trained with the probe equals the one trained with threads fixed."""
    from lineage.training import Classifier, fit

    class Data(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x, self.y = (
                torch.randn(64, 5, generator=g),
                torch.randint(0, 3, (64,), generator=g),
            )

        def __len__(self):
            return 64

        def __getitem__(self, i):
            return self.x[i], self.y[i]

    def trained(threads):
        import pytorch_lightning as pl

        dm = pl.LightningDataModule.from_datasets(train_dataset=Data(), batch_size=16)
        torch.manual_seed(1)
        net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8),
                                  torch.nn.Dropout(0.3), torch.nn.Linear(8, 3))  # fmt: skip
        runtime.start_job(threads)
        cfg = {"epochs": 2, "lr": 0.01, "optimizer": "adam", "progress": False}
        return fit(Classifier(net, cfg, 3), dm, cfg, seed=5).model.state_dict()

    probes, real = [], runtime.fastest
    monkeypatch.setattr(
        runtime, "fastest", lambda step, most: probes.append(most) or real(step, most)
    )
    fixed, settled = trained(1), trained(None)
    assert probes == [4]  # the default probed once, at the first batch; threads=1 never
    assert all(torch.equal(fixed[k], settled[k]) for k in fixed)
