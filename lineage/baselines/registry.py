"""Peer baselines for lineage: one decorated function per method, one interface.

A baseline scores a (source, suspect) pair from held-out test data of the source's task;
a higher score means the suspect is more likely derived from the source. Every method but
weight cosine treats the suspect as a black box (it only queries its outputs), and the
source-side probes (adversarial pairs, boundary points, misclassified inputs) are seeded
from a private generator, so a given seed gives the same answer and the global RNG is
left alone. The wrapper `baseline` does what every method needs: it checks the data and
the options, puts both models in eval mode (restored afterwards) and times the call.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LineageError
from ..registry import Registry
from ..runtime import eval_mode
from ..training import predict


@dataclass
class BaselineResult:
    score: float  # higher = more likely lineage; NaN when the method does not apply
    seconds: float  # wall time of the whole call (probes + queries)
    details: dict[str, Any] = field(default_factory=dict)


class Baseline(Protocol):
    def __call__(
        self,
        source: nn.Module,
        suspect: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        cfg: Mapping[str, Any],
        seed: int,
    ) -> BaselineResult: ...


# What a method body receives: options already validated, data already checked.
Impl = Callable[
    [nn.Module, nn.Module, torch.Tensor, torch.Tensor, dict[str, Any], torch.Generator],
    tuple[float, dict[str, Any]],
]
Check = Callable[[Any], Any]

BASELINES: Registry[Baseline] = Registry("baseline")
# What each method needs of the suspect: "labels", "outputs" (logits) or "weights".
ACCESS: dict[str, str] = {}


def baseline(name: str, access: str, options: Mapping[str, Check]) -> Callable[[Impl], Baseline]:
    """Register `impl` under `name`; `options` maps each config key to its check."""

    def deco(impl: Impl) -> Baseline:
        def score(
            source: nn.Module,
            suspect: nn.Module,
            x: torch.Tensor,
            y: torch.Tensor,
            cfg: Mapping[str, Any],
            seed: int,
        ) -> BaselineResult:
            opts = _parse_options(name, cfg, options)
            check_data(x, y)
            # Probes are built on CPU (seeded there); each batch goes to its model's device.
            x, y = x.cpu(), y.cpu()
            t0 = time.perf_counter()
            with eval_mode(source, suspect):
                value, details = impl(source, suspect, x, y, opts, _generator(seed))
            return BaselineResult(float(value), time.perf_counter() - t0, details)

        # Not functools.wraps: the public signature takes a seed, not the impl's generator.
        score.__name__ = score.__qualname__ = name
        score.__doc__ = sys.modules[impl.__module__].__doc__  # the method, as described there
        ACCESS[name] = access
        return BASELINES.register(name)(score)

    return deco


# --- option checks: each returns the clean value or raises a message fragment -------------


def positive_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError("must be a positive integer")
    return v


def nonnegative_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError("must be a non-negative integer")
    return v


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError("must be a finite number")
    return float(v)


def positive_float(v: Any) -> float:
    if _number(v) <= 0:
        raise ValueError("must be > 0")
    return float(v)


def nonnegative_float(v: Any) -> float:
    if _number(v) < 0:
        raise ValueError("must be >= 0")
    return float(v)


def choice(*valid: str) -> Check:
    def check(v: Any) -> str:
        if v not in valid:
            raise ValueError(f"must be one of {', '.join(valid)}")
        return str(v)

    return check


def _parse_options(
    name: str, cfg: Mapping[str, Any], options: Mapping[str, Check]
) -> dict[str, Any]:
    if not isinstance(cfg, Mapping):
        raise LineageError(f"baselines.{name}: options must be a mapping, got {type(cfg).__name__}")
    missing = sorted(set(options) - set(cfg))
    unknown = sorted(set(cfg) - set(options))
    if missing or unknown:
        raise LineageError(
            f"baselines.{name}: missing options {missing}, unknown options {unknown}; "
            f"expected exactly {sorted(options)}"
        )
    out = {}
    for key, check in options.items():
        try:
            out[key] = check(cfg[key])
        except ValueError as e:
            raise LineageError(f"baselines.{name}.{key}={cfg[key]!r}: {e}") from None
    return out


def check_data(x: torch.Tensor, y: torch.Tensor) -> None:
    """Held-out test data: x float in [0, 1] shaped (N, C, H, W), y integer labels (N,)."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise LineageError("baseline data: x and y must be tensors")
    if x.dim() != 4 or not x.is_floating_point():
        raise LineageError(
            f"baseline data: x must be float (N, C, H, W), got {x.dtype} {tuple(x.shape)}"
        )
    if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise LineageError(
            f"baseline data: y must be integer labels (N,), got {y.dtype} {tuple(y.shape)}"
        )
    if len(x) == 0:
        raise LineageError("baseline data: x is empty")
    if len(x) != len(y):
        raise LineageError(f"baseline data: {len(x)} inputs but {len(y)} labels")
    if not bool(torch.isfinite(x).all()):
        raise LineageError("baseline data: x holds NaN or infinite values")
    if float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise LineageError("baseline data: x must lie in [0, 1] (pixel units)")
    if int(y.min()) < 0:
        raise LineageError("baseline data: y holds negative labels")


def _generator(seed: int) -> torch.Generator:
    # A CPU generator: the same probes whatever device the models sit on.
    return torch.Generator().manual_seed(int(seed))


# --- shared probes and queries --------------------------------------------------------------


def logits(model: nn.Module, x: torch.Tensor, batch_size: int, who: str) -> torch.Tensor:
    """Batched logits on the model's device, returned on CPU; non-finite outputs are errors."""
    out = predict(model, x, batch_size)
    if out.dim() != 2:
        raise LineageError(f"{who} model returned outputs shaped {tuple(out.shape)}, not (N, K)")
    if not bool(torch.isfinite(out).all()):
        raise LineageError(f"{who} model returned NaN or infinite outputs")
    return out


def paired_logits(
    source: nn.Module, suspect: nn.Module, x: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both models' logits on x; they must answer over the same classes."""
    a = logits(source, x, batch_size, "source")
    b = logits(suspect, x, batch_size, "suspect")
    if a.shape != b.shape:
        raise LineageError(
            f"source answers over {a.shape[1]} classes but the suspect over "
            f"{b.shape[1]}; output-based baselines need the same task"
        )
    return a, b


def num_classes(source: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """The source's class count, checked against the labels (methods that use y need it)."""
    k = logits(source, x[:1], 1, "source").shape[1]
    if k < 2:
        raise LineageError(f"source has {k} output; baselines need at least 2 classes")
    if int(y.max()) >= k:
        raise LineageError(f"label {int(y.max())} is out of range for a {k}-class source")
    return k


def subset(
    x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random sample of n points (all of them when there are fewer)."""
    idx = torch.randperm(len(x), generator=gen)[:n]
    return x[idx], y[idx]


def translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Shift image i by (dy[i], dx[i]) whole pixels, filling the uncovered border with 0."""
    s = int(torch.cat([dy.abs(), dx.abs(), torch.zeros(1, dtype=dy.dtype)]).max())
    n, _, h, w = x.shape
    padded = F.pad(x, (s, s, s, s))
    rows = torch.arange(h)[None, :] + s - dy[:, None]  # output row r reads input row r - dy
    cols = torch.arange(w)[None, :] + s - dx[:, None]
    out = padded[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)  # advanced indexing put the channel axis last


def augment(
    x: torch.Tensor, gen: torch.Generator, noise_std: float, max_shift: int
) -> torch.Tensor:
    """Random shift by up to max_shift pixels plus Gaussian pixel noise, kept in [0, 1]."""
    dy = torch.randint(-max_shift, max_shift + 1, (len(x),), generator=gen)
    dx = torch.randint(-max_shift, max_shift + 1, (len(x),), generator=gen)
    noise = torch.randn(x.shape, generator=gen) * noise_std
    return (translate(x, dy, dx) + noise).clamp(0.0, 1.0)


def source_errors(
    source: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    n: int,
    gen: torch.Generator,
    noise_std: float,
    max_shift: int,
    max_rounds: int,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Up to n inputs the source misclassifies, their true labels, and how many are natural.

    The test set's own errors come first; each further round (at most max_rounds) adds
    augmented copies of the test images that the source gets wrong, because a good model
    makes too few natural errors to fingerprint it.
    """
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    count = natural = 0
    for r in range(max_rounds + 1):
        xr = x if r == 0 else augment(x, gen, noise_std, max_shift)
        wrong = (logits(source, xr, batch_size, "source").argmax(1) != y).nonzero().squeeze(1)
        take = wrong[torch.randperm(len(wrong), generator=gen)][: n - count]
        xs.append(xr[take])
        ys.append(y[take])
        count += len(take)
        if r == 0:
            natural = count
        if count >= n:
            break
    return torch.cat(xs), torch.cat(ys), natural


def not_applicable(reason: str, **details: Any) -> tuple[float, dict[str, Any]]:
    return float("nan"), {"applicable": False, "reason": reason, **details}


def label_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """The share of points on which logits a and b give the same top-1 label."""
    return float((a.argmax(1) == b.argmax(1)).float().mean())


# The options `error_probes` reads besides n_points (which each method lists first).
ERROR_PROBE_OPTIONS: dict[str, Check] = {
    "noise_std": nonnegative_float,
    "max_shift": nonnegative_int,
    "max_rounds": nonnegative_int,
    "batch_size": positive_int,
}


def error_probes(
    source: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: Mapping[str, Any],
    gen: torch.Generator,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """`source_errors` with the options of SAC-w and AKH, timed: (inputs, details), where
    details hold n_points, n_natural and probe_seconds (the source-only part of the cost).
    The labels are checked against the source's classes first: the errors are read off y."""
    num_classes(source, x, y)
    t0 = time.perf_counter()
    xe, _, natural = source_errors(
        source,
        x,
        y,
        cfg["n_points"],
        gen,
        cfg["noise_std"],
        cfg["max_shift"],
        cfg["max_rounds"],
        cfg["batch_size"],
    )
    return xe, {
        "n_points": len(xe),
        "n_natural": natural,
        "probe_seconds": time.perf_counter() - t0,
    }
