"""The runtime the evaluators and the baselines share: which device a model sits on, and
evaluation in eval mode at full fp32 precision."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
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
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def threads_for(requested: int | None, parallel_jobs: int) -> int:
    """Torch threads for one job: as asked, else the cores shared among the jobs that run
    side by side (torch's default, every core in every process, makes two jobs on two
    cores fight over them: one default run took 16 minutes instead of 30 seconds)."""
    if requested:
        return int(requested)
    return max(1, cores() // max(1, parallel_jobs))


def use_threads(n: int) -> None:
    """`n` threads for torch and for the BLAS/OpenMP pools numpy and scipy use."""
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:  # threadpoolctl comes with scikit-learn; without it torch's suffice
        pass
