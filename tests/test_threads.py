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
