"""Sweeps on SLURM (issue 26): a request no node can hold is refused before submitting,
a job that ends without a result (cancelled, killed, timed out) is named in the sweep's
summary and the sweep exits 1, a rerun runs just that job, and a job's threads follow its
allocation.

The first tests need no scheduler (sinfo and squeue answers are given). The others run
against a real SLURM (CI starts a one-node one: scripts/slurm_up.sh) and are skipped
where there is none, unless LINEAGE_SLURM=required (CI) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HANG_S, ROOT, python

from lineage import slurm, sweep

# -- without a scheduler ----------------------------------------------------------------


@pytest.fixture
def fresh_sweep(monkeypatch):
    monkeypatch.setattr(sweep, "planned", [])
    monkeypatch.setattr(sweep, "ended", {})


SINFO = "cpu*|2|3900\ncpu*|4|7800\ngpu|32|256000\n"


@pytest.mark.parametrize(
    "params,message",
    [
        ({"partition": "cpu", "cpus_per_task": 4, "mem_gb": 2}, None),
        ({"partition": None, "cpus_per_task": 1, "mem_gb": 7}, None),  # the default: cpu
        ({"partition": "cpu", "cpus_per_task": 8, "mem_gb": 2}, "8 CPUs per job"),
        ({"partition": "cpu", "tasks_per_node": 3, "cpus_per_task": 2}, "6 CPUs per job"),
        ({"partition": "cpu", "cpus_per_task": 1, "mem_gb": 16}, "16384 MB per job"),
        ({"partition": "gpu", "cpus_per_task": 8, "mem_gb": 16}, None),
        ({"partition": "nope", "cpus_per_task": 1}, "partition nope has no nodes"),
    ],
)
def test_a_request_no_node_can_hold_is_refused(monkeypatch, capsys, params, message):
    monkeypatch.setattr(slurm, "_run", lambda *cmd: SINFO)
    if message is None:
        slurm.check_fits(params)
        return
    with pytest.raises(SystemExit) as e:
        slurm.check_fits(params)
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and message in line, line


def test_without_sinfo_the_scheduler_decides(monkeypatch):
    monkeypatch.setattr(slurm, "_run", lambda *cmd: None)
    slurm.check_fits({"partition": "cpu", "cpus_per_task": 10**6})


def test_states_come_from_squeue_and_a_forgotten_job_has_ended(monkeypatch):
    answers = iter(
        [
            (0, "5_0|RUNNING\n5_1|PENDING\n", ""),
            (1, "", "slurm_load_jobs error: Invalid job id specified"),  # slurmctld forgot 5
        ]
    )

    def squeue(cmd, **kw):
        assert cmd[0] == "squeue" and "--states=all" in cmd and cmd[-1] == "5"
        rc, out, err = next(answers)
        return subprocess.CompletedProcess(cmd, rc, out, err)

    monkeypatch.setattr(slurm.subprocess, "run", squeue)
    w = slurm.SqueueWatcher(delay_s=15)
    assert w.get_state("5_0", mode="force") == "RUNNING" and not w.is_done("5_1", "cache")
    assert w.get_state("5_1", mode="force") == "GONE" and w.is_done("5_0", "cache")


@pytest.mark.parametrize(
    "state,said",
    [("CANCELLED by 0", "cancelled"), ("OUT_OF_MEMORY", "out of memory"),
     ("TIMEOUT", "timed out"), ("FAILED", "failed"), ("GONE", "killed"), ("", "killed")],
)  # fmt: skip
def test_the_scheduler_states_in_words(state, said):
    assert sweep.ended_as(state) == said


def test_the_summary_names_jobs_that_ended_without_a_result(tmp_path, fresh_sweep, capsys):
    ok = tmp_path / "ratio=0.1"
    (ok / ".hydra").mkdir(parents=True)
    (ok / ".hydra" / "config.yaml").write_text("{}")
    (ok / "metrics.json").write_text('{"derived.determination.is_lineage": true}')
    sweep.planned += ["ratio=0.1", "ratio=0.5", "ratio=0.9"]
    sweep.ended["ratio=0.5"] = "cancelled, job 5_1"  # never started: no folder at all
    assert sweep.summarize(tmp_path, started=0.0) == 1
    out, err = capsys.readouterr()
    assert "3 jobs, 1 ok, 0 skipped, 0 failed, 2 missing" in out
    assert "cancelled, job 5_1" in out
    assert err.strip() == (
        "error: 2 of 3 jobs did not finish: ratio=0.5 (cancelled, job 5_1), ratio=0.9 (no result)"
    )


class FakeJob:
    """A submitted job as submitit gives it: done after `polls` checks, then its outcome."""

    def __init__(self, job_id, outcome, state="COMPLETED", polls=2):
        self.job_id, self.outcome, self.state, self.polls = job_id, outcome, state, polls

    def done(self):
        self.polls -= 1
        return self.polls <= 0

    def results(self):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return [self.outcome]


def test_the_wait_outlives_jobs_that_end_without_a_result():
    from submitit.core.utils import FailedJobError, UncompletedJobError

    jobs = [
        FakeJob("9_0", UncompletedJobError("no output"), "CANCELLED by 0", polls=3),
        FakeJob("9_1", "a JobReturn"),
        FakeJob("9_2", FailedJobError("Traceback ...\nValueError: bad\n"), "FAILED"),
        FakeJob("9_3", UncompletedJobError("no output"), "OUT_OF_MEMORY", polls=5),
    ]
    said: dict[int, str] = {}
    assert slurm.wait(jobs, said.__setitem__, poll_s=0) == ["a JobReturn"]
    assert said == {
        0: "cancelled, job 9_0",
        2: "failed: ValueError: bad",
        3: "out of memory, job 9_3",
    }


# -- against a real SLURM ---------------------------------------------------------------


def _slurm_here() -> str | None:
    if not shutil.which("sbatch"):
        return "no SLURM here (sbatch missing); CI starts one: scripts/slurm_up.sh"
    r = subprocess.run(["sinfo", "-h", "-p", "cpu", "-o", "%t"], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        return f"no SLURM partition `cpu` answers (sinfo: {r.stderr.strip() or 'no nodes'})"
    return None


WHY_NOT = _slurm_here()
needs_slurm = pytest.mark.skipif(
    WHY_NOT is not None and os.environ.get("LINEAGE_SLURM") != "required",
    reason=str(WHY_NOT),
)
SWEEP = [
    "-m",
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.partition=cpu",
    "experiment=smoke",
    "logger=none",
    "data.limit=300",
    "data.epochs=3",
    "n_independent=2",
    "determination.probe_points=200",
    "closeness.max_points=100",
    "closeness.min_points=50",
    "closeness.n_boot=200",
]


def _env() -> dict[str, str]:
    # the jobs run this checkout, wherever the scheduler starts them
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0", "PYTHONPATH": path}


def _sweep(tmp: Path, *extra: str, timeout: int = HANG_S) -> subprocess.CompletedProcess:
    argv = [*SWEEP, f"paths.zoo={tmp / 'zoo'}", *extra]
    try:
        return python(str(ROOT / "run.py"), *argv, cwd=tmp, env=_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the SLURM sweep {' '.join(extra)} hung past {timeout} s")


@needs_slurm
def test_an_impossible_request_is_refused_before_submitting(tmp_path):
    cpus = max(c for c, _ in slurm.nodes("cpu") or [(1, 0)]) + 1
    r = _sweep(tmp_path, f"hydra.launcher.cpus_per_task={cpus}", f"hydra.sweep.dir={tmp_path}/s")
    assert r.returncode == 2, r.stderr[-3000:]
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert f"{cpus} CPUs per job" in line and "partition cpu" in line
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "s" / ".submitit").exists()  # nothing was submitted


def _running_task(cwd: Path, deadline: float) -> str:
    """A running task of the sweep started in `cwd` (other tests may have tasks running)."""
    while time.time() < deadline:
        r = subprocess.run(
            ["squeue", "-h", "-r", "-t", "RUNNING", "-o", "%i|%Z"], capture_output=True, text=True
        )
        for line in r.stdout.splitlines():
            task, workdir = line.split("|", 1)
            if Path(workdir) == cwd:
                return task
        time.sleep(0.2)
    pytest.fail("no task of the sweep ever ran (squeue)")


@needs_slurm
def test_a_cancelled_task_ends_the_sweep_with_its_summary_and_a_rerun_completes_it(tmp_path):
    sweep_dir = tmp_path / "s"
    extra = ["modification=noise", "ratio=0.1,0.5", f"hydra.sweep.dir={sweep_dir}"]
    argv = [sys.executable, str(ROOT / "run.py"), *SWEEP, f"paths.zoo={tmp_path / 'zoo'}"]
    argv += [*extra, "hydra.launcher.array_parallelism=1"]  # the second waits for the first
    p = subprocess.Popen(argv, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        task = _running_task(tmp_path, time.time() + HANG_S)
        subprocess.run(["scancel", task], check=True)
        out, err = p.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        pytest.fail("the sweep hung after one of its tasks was cancelled")
    finally:
        p.kill()
    assert p.returncode == 1, err[-3000:]
    assert "2 jobs, 1 ok, 0 skipped, 0 failed, 1 missing" in out, out[-3000:]
    (row,) = [ln for ln in out.splitlines() if " missing " in ln]
    assert f"cancelled, job {task}" in row
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert line.startswith("error: 1 of 2 jobs did not finish: ") and "cancelled" in line
    assert "Traceback" not in err and "sacct" not in err

    r = _sweep(tmp_path, *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 jobs, 1 ok, 1 skipped, 0 failed" in r.stdout
    assert r.stdout.count("(done: skipped)") == 1  # decided before submitting
    assert len(list(sweep_dir.glob("*/metrics.json"))) == 2


JOB_THREADS = """
import os, subprocess, sys
from pathlib import Path
from lineage import runtime
runtime.JOBS_DIR = Path(sys.argv[1])  # this test's: other tests' jobs keep their threads
runtime.JOBS_DIR.mkdir()
others = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
for p in others:  # three other lineage jobs running on this node, on any core
    (runtime.JOBS_DIR / f"{p.pid}.pid").write_text("")
try:
    print(len(os.sched_getaffinity(0)), runtime.start_job(None, parallel_jobs=8))
finally:
    for p in others:
        p.kill()
        (runtime.JOBS_DIR / f"{p.pid}.pid").unlink()
"""


@needs_slurm
def test_a_job_under_cpus_per_task_2_gets_two_threads(tmp_path):
    if max(c for c, _ in slurm.nodes("cpu") or [(1, 0)]) < 2:
        pytest.skip("the node has fewer than 2 CPUs")
    (tmp_path / "job.py").write_text(JOB_THREADS)
    out = tmp_path / "out.txt"
    cmd = ["sbatch", "--wait", "-p", "cpu", "-c", "2", "--mem=1G", "-o", str(out)]
    cmd += ["--wrap", f"{sys.executable} {tmp_path / 'job.py'} {tmp_path / 'jobs'}"]
    try:
        r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=HANG_S)
    except subprocess.TimeoutExpired:
        pytest.fail("the sbatch job measuring threads never ended")
    assert r.returncode == 0, r.stderr + out.read_text()
    cores, threads = map(int, out.read_text().split()[-2:])
    assert threads == 2 and cores >= 2
