"""SLURM from the launching process: a request the partition can never satisfy is refused
before submitting, job states come from squeue (which needs no accounting database, where
submitit's sacct fails every poll and never learns that a job ended), and the sweep waits
for each job to end, with or without a result.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from submitit.slurm.slurm import SlurmInfoWatcher

from . import sweep

log = logging.getLogger("lineage")


def refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _run(*cmd: str) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def nodes(partition: str | None) -> list[tuple[int, int]] | None:
    """(CPUs, memory MB) of each node of the partition (the default one when None); None
    when sinfo cannot say."""
    out = _run("sinfo", "-h", "-N", "-o", "%P|%c|%m")
    if out is None:
        return None
    found = []
    for line in out.splitlines():
        part, cpus, mem = (line.split("|") + ["", ""])[:3]
        default = part.endswith("*")
        if (partition is None and default) or part.rstrip("*") == partition:
            try:
                found.append((int(cpus.rstrip("+")), int(mem.rstrip("+"))))
            except ValueError:
                continue
    return found


def check_fits(params: dict[str, Any]) -> None:
    """Refuse (exit 2) a request no node of the partition can hold: sbatch would accept
    it and the array would wait forever (reason PartitionConfig or Resources)."""
    partition = params.get("partition")
    found = nodes(partition)
    if found is None:  # no sinfo here: the scheduler itself decides
        return
    where = f"partition {partition}" if partition else "the default partition"
    if not found:
        refuse(f"{where} has no nodes (sinfo); set hydra.launcher.partition")
    tasks = int(params.get("tasks_per_node") or 1)
    cpus = tasks * int(params.get("cpus_per_task") or 1)
    mem_mb = int(float(params.get("mem_gb") or 0) * 1024)
    max_cpus, max_mem = max(c for c, _ in found), max(m for _, m in found)
    if cpus > max_cpus:
        refuse(
            f"{cpus} CPUs per job (hydra.launcher.cpus_per_task={params.get('cpus_per_task')}) "
            f"but the largest node of {where} has {max_cpus}"
        )
    if mem_mb > max_mem:
        refuse(
            f"{mem_mb} MB per job (hydra.launcher.mem_gb={params.get('mem_gb')}) "
            f"but the largest node of {where} has {max_mem} MB"
        )


class SqueueWatcher(SlurmInfoWatcher):
    """Job states from `squeue --states=all`, which lists a job until slurmctld forgets it
    (MinJobAge after it ended); a job no longer listed has ended ("GONE")."""

    def _make_command(self) -> list[str] | None:
        ids = sorted({x.split("_")[0] for x in self._registered - self._finished})
        if not ids:
            return None
        return ["squeue", "-h", "-r", "--states=all", "-o", "%i|%T", "-j", ",".join(ids)]

    def update(self) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        p = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if p.returncode != 0 and "Invalid job id" not in p.stderr:
            log.debug("squeue failed (%s); job states kept", p.stderr.strip())
            self._last_status_check = time.time()
            return
        states = dict(line.split("|", 1) for line in p.stdout.splitlines() if "|" in line)
        for job_id in self._registered - self._finished:
            self._info_dict[job_id] = {"State": states.get(job_id, "GONE")}
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)
        self._last_status_check = time.time()


def wait(jobs: Sequence[Any], on_end: Callable[[int, str], Any], poll_s: float = 1.0) -> list[Any]:
    """Each job's Hydra JobReturn once it ended with one; for a job that ended without one
    (cancelled, killed, timed out), on_end(its index, what ended it) instead of raising, so
    the sweep always reaches its summary."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    from .text import printable

    pending = dict(enumerate(jobs))
    results = []
    while pending:
        for i, job in list(pending.items()):
            if not job.done():
                continue
            del pending[i]
            try:
                results.append(job.results()[0])
            except FailedJobError as e:  # its code raised (an UncompletedJobError too: first)
                lines = [ln for ln in str(e).splitlines() if ln.strip()]
                on_end(i, f"failed: {printable(lines[-1] if lines else e)}"[:300])
            except UncompletedJobError:
                on_end(i, f"{sweep.ended_as(job.state)}, job {job.job_id}")
        if pending:
            time.sleep(poll_s)
    return results
