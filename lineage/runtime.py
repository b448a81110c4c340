"""The runtime the evaluators and the baselines share: which device a model sits on, and
evaluation in eval mode at full fp32 precision."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from torch import nn


def device_of(model: Any) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, (str, torch.device)):
        return torch.device(dev)
    if isinstance(model, nn.Module):
        for t in chain(model.parameters(), model.buffers()):
            return t.device
    return torch.device("cpu")


@contextmanager
def eval_mode(*models: Any) -> Iterator[None]:
    """Evaluate in eval mode, then give every module its own flag back."""
    flags = [
        (m, m.training) for model in models if isinstance(model, nn.Module) for m in model.modules()
    ]
    for m, _ in flags:
        m.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def ieee_fp32(device: torch.device) -> Iterator[None]:
    """Full fp32 on CUDA while attacking: TF32 (cuDNN's default for convolutions) rounds
    logits to ~1e-3, far coarser than `tol`, and differently for each batch size."""
    if device.type != "cuda":
        yield
        return
    cudnn: Any = torch.backends.cudnn
    matmul: Any = torch.backends.cuda.matmul
    knobs: list[tuple[Any, str, Any]]
    if hasattr(getattr(cudnn, "conv", None), "fp32_precision"):  # torch >= 2.9
        knobs = [
            (cudnn.conv, "fp32_precision", "ieee"),
            (cudnn.rnn, "fp32_precision", "ieee"),
            (matmul, "fp32_precision", "ieee"),
        ]
    else:
        knobs = [(cudnn, "allow_tf32", False), (matmul, "allow_tf32", False)]
    saved = [getattr(obj, name) for obj, name, _ in knobs]
    for obj, name, value in knobs:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for (obj, name, _), value in zip(knobs, saved):
            setattr(obj, name, value)


def cores() -> int:
    """The cores this process may run on (the scheduler's affinity, not the machine's)."""
    return len(_affinity())


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0)) or {0}
    except AttributeError:  # not on Linux
        return set(range(max(1, os.cpu_count() or 1)))


def slurm_cpus() -> int | None:
    """The CPUs SLURM allocated to this job's task (`--cpus-per-task`), None outside SLURM.
    SLURM's scheduler gives them to no other job, bound to them (task/affinity, cgroup) or
    not (task/none), so they are this job's own to use."""
    if not os.environ.get("SLURM_JOB_ID"):
        return None
    try:
        n = int(os.environ.get("SLURM_CPUS_PER_TASK", ""))
    except ValueError:
        return None
    return n if n > 0 else None


def threads_for(requested: int | None, parallel_jobs: int) -> int:
    """Torch threads for one job: as asked; in a SLURM job, its allocation; else the cores
    shared among the jobs that run side by side on them: those of its launcher, or the
    lineage jobs running on these cores if they are more (torch's default, every core in
    every process, makes two jobs on two cores fight over them: two default runs started
    together took 5.9x one alone). Jobs bound to other cores (taskset, SLURM's task
    binding) share none of this job's and do not count."""
    if requested:
        return int(requested)
    allocated = slurm_cpus()
    if allocated:
        return max(1, min(allocated, cores()))
    return max(1, cores() // max(1, parallel_jobs, running_jobs()))


# Each running job's pid file, so separate processes (two `lineage run` in two shells, or
# two sweeps) can share the cores without knowing of each other.
_UID = os.getuid() if hasattr(os, "getuid") else 0
JOBS_DIR = Path(tempfile.gettempdir()) / f"lineage-jobs-{_UID}"
_job: dict[str, Any] = {}  # this process's running job: requested threads, launcher's jobs


def running_jobs() -> int:
    """Live lineage jobs on this process's cores (their pid files hold the cores each may
    run on; an empty one, any core). Stale files are removed."""
    mine, n = _affinity(), 0
    for f in JOBS_DIR.glob("*.pid"):
        try:
            os.kill(int(f.stem), 0)
        except ProcessLookupError:
            f.unlink(missing_ok=True)
            continue
        except (ValueError, OSError):  # not ours to signal: still a running job
            pass
        n += f.stem == str(os.getpid()) or _shares(f, mine)
    return n


def _shares(pid_file: Path, mine: set[int]) -> bool:
    try:
        theirs = {int(c) for c in pid_file.read_text().split()}
    except (OSError, ValueError):
        return True
    return not theirs or bool(theirs & mine)


def start_job(requested: int | None, parallel_jobs: int = 1) -> int:
    """Register this process as a running job and take its share of the cores."""
    try:
        JOBS_DIR.mkdir(exist_ok=True)
        cpus = " ".join(map(str, sorted(_affinity())))
        (JOBS_DIR / f"{os.getpid()}.pid").write_text(cpus + "\n")
    except OSError:  # no shared temp folder: the launcher's share alone
        pass
    _job.update(requested=requested, parallel=parallel_jobs)
    return rebalance()


def rebalance() -> int:
    """The running job's share again (before each model's training): a job started alone
    gives up cores when others have started since."""
    if not _job:
        return torch.get_num_threads()
    n = threads_for(_job["requested"], _job["parallel"])
    if n != torch.get_num_threads():
        use_threads(n)
    return n


def settle(step: Callable[[], Any]) -> int:
    """The running job's thread count, chosen by timing `step` (one forward of the model at
    hand): its share of the cores, or 1 thread where that is faster. A small model gains
    nothing from a second thread, and on a machine busy with other work OpenMP threads spin
    on descheduled peers: a digits MLP took 85 s with 2 threads and 1.9 s with 1. Sizes and
    load change the answer, so it is measured, not guessed; an explicit `threads` or a
    SLURM allocation is never second-guessed."""
    if not _job or _job["requested"] or slurm_cpus():
        return torch.get_num_threads()
    share = threads_for(None, _job["parallel"])
    best = fastest(step, share) if share > 1 else 1
    if best != torch.get_num_threads():
        use_threads(best)
    return best


def settle_on(model: nn.Module, x: torch.Tensor) -> int:
    """`settle`, timed on forwards of `model` over the batch `x` in eval mode without
    gradients: no state, statistic or random draw of the model changes."""

    def step() -> None:
        with eval_mode(model), torch.no_grad():
            model(x)

    return settle(step)


def fastest(step: Callable[[], Any], most: int) -> int:
    """1 or `most` threads, whichever runs `step` faster by a clear margin (ties go to 1:
    the spare core is worth more to the machine). Alternating rounds, each long enough to
    time (about 20 ms), so a burst of other work hits both counts alike."""
    rng = torch.get_rng_state()
    try:
        counts = (1, most)
        times: dict[int, list[float]] = {1: [], most: []}
        for n in counts:  # warm: the first call of a thread count pays its set-up
            torch.set_num_threads(n)
            step()
        t0 = time.perf_counter()
        step()
        once = max(time.perf_counter() - t0, 1e-6)
        reps = max(1, min(50, int(0.02 / once)))
        for _ in range(3 if once < 0.2 else 1):
            for n in counts:
                torch.set_num_threads(n)
                t0 = time.perf_counter()
                for _ in range(reps):
                    step()
                times[n].append(time.perf_counter() - t0)
    finally:
        torch.set_rng_state(rng)
    return most if statistics.median(times[most]) < 0.85 * statistics.median(times[1]) else 1


def end_job() -> None:
    _job.clear()
    (JOBS_DIR / f"{os.getpid()}.pid").unlink(missing_ok=True)


def use_threads(n: int) -> None:
    """`n` threads for torch and for the BLAS/OpenMP pools numpy and scipy use."""
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:  # threadpoolctl comes with scikit-learn; without it torch's suffice
        pass
