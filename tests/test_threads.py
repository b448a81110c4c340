"""Threads per job: the cores are shared among the launcher's jobs and among the lineage
jobs running on this machine (lineage.runtime)."""

import os
import subprocess
import sys

import pytest
import torch

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
