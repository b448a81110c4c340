"""Peer baselines for lineage: one decorated function per method, one interface.

A baseline scores a (source, suspect) pair from held-out test data of the source's task;
a higher score means the suspect is more likely derived from the source. Every method but
weight cosine treats the suspect as a black box (it only queries its outputs), and the
source-side probes (adversarial pairs, boundary points, misclassified inputs) are seeded
from a private generator, so a given seed gives the same answer and the global RNG is
left alone. The wrapper `baseline` does what every method needs: it checks the data and
the options (its options dataclass), puts both models in eval mode (restored afterwards)
and times the call.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, make_dataclass
from typing import Any, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LineageError
from ..registry import Registry
from ..runtime import eval_mode
from ..settings import from_mapping, knob
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
    [nn.Module, nn.Module, torch.Tensor, torch.Tensor, Any, torch.Generator],
    tuple[float, dict[str, Any]],
]

BASELINES: Registry[Baseline] = Registry("baseline")
# What each method needs of the suspect: "labels", "outputs" (logits) or "weights".
ACCESS: dict[str, str] = {}
# Each method's options: a dataclass next to its code that is their one home (defaults and
# ranges, lineage.settings.knob); conf/baselines/default.yaml only selects them.
OPTIONS: dict[str, type] = {}


def baseline(name: str, access: str, options: type) -> Callable[[Impl], Baseline]:
    """Register `impl` under `name`; `options` is its options dataclass, and `impl`
    receives an instance of it, checked."""

    def deco(impl: Impl) -> Baseline:
        def score(
            source: nn.Module,
            suspect: nn.Module,
            x: torch.Tensor,
            y: torch.Tensor,
            cfg: Mapping[str, Any],
            seed: int,
        ) -> BaselineResult:
            opts = options_of(name, cfg)
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
        OPTIONS[name] = options
        return BASELINES.register(name)(score)

    return deco


# --- options ----------------------------------------------------------------------------


def options_of(name: str, cfg: Any) -> Any:
    """`name`'s options dataclass from `cfg` over its defaults: unknown names, wrong types
    and out-of-range values fail, naming the key (baselines.<name>.<key>)."""
    BASELINES.get(name)
    if not isinstance(cfg, Mapping):
        raise LineageError(f"baselines.{name}: options must be a mapping, got {type(cfg).__name__}")
    return from_mapping(OPTIONS[name], cfg, f"baselines.{name}")


def config(overrides: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every registered baseline's options, checked: its defaults, then `overrides`
    ({name: {key: value}}, e.g. a preset's), as plain values (JSON, hashes)."""
    over = dict(overrides or {})
    for name in over:
        BASELINES.get(name)
    return {name: asdict(options_of(name, over.get(name) or {})) for name in BASELINES.names()}


def schema() -> type:
    """The `baselines` group's schema: one field per registered baseline, typed by its
    options (so conf/baselines/default.yaml only selects it)."""
    return make_dataclass(
        "BaselinesConf",
        [(n, OPTIONS[n], field(default_factory=OPTIONS[n])) for n in BASELINES.names()],
    )


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


# --- the source's probes, made once ----------------------------------------------------------

T = TypeVar("T")
# A zoo scores dozens of suspects against each source with one seed, and a method's probes
# (the source's errors, boundary points, adversarial pairs: nearly all of its cost) depend on
# nothing else: the source's weights, the data, the options and the generator's state. They
# are made once and reused while all of those are the same objects, unmodified, so every
# answer is the one a fresh call gives (tests/test_baselines.py).
_PROBES: weakref.WeakKeyDictionary[nn.Module, dict[Any, Any]] = weakref.WeakKeyDictionary()


def source_probes(
    source: nn.Module,
    what: str,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: Any,
    gen: torch.Generator,
    make: Callable[[], T],
) -> T:
    """make() (which may draw from gen), or what it returned before for the same source
    weights, x, y, options and generator state. The caller draws nothing from gen after."""
    tensors = [*source.state_dict(keep_vars=True).values(), x, y]
    key = (what, repr(cfg), bytes(gen.get_state().numpy()))
    kept = _PROBES.setdefault(source, {}).get(key)
    if kept is not None:
        was, versions, value = kept
        if len(was) == len(tensors) and all(
            a is b and a._version == v for a, b, v in zip(was, tensors, versions, strict=True)
        ):
            return value  # type: ignore[no-any-return]
    value = make()
    _PROBES[source][key] = (tensors, [t._version for t in tensors], value)
    return value


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


@dataclass
class ErrorProbes:
    """The options `error_probes` reads (SAC-w and AKH): how the source's errors are topped
    up with augmented test images when it makes too few natural ones."""

    n_points: int = knob(100, lo=1)  # the source's errors wanted
    noise_std: float = knob(0.1, lo=0)  # Gaussian pixel noise of the augmentation
    max_shift: int = knob(2, lo=0)  # pixels
    max_rounds: int = knob(10, lo=0)  # augmented passes over the test set, at most
    batch_size: int = knob(512, lo=1)


def error_probes(
    source: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: ErrorProbes,
    gen: torch.Generator,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """`source_errors` with the options of SAC-w and AKH, timed: (inputs, details), where
    details hold n_points, n_natural and probe_seconds (the source-only part of the cost).
    The labels are checked against the source's classes first: the errors are read off y."""
    num_classes(source, x, y)

    def make() -> tuple[torch.Tensor, int]:
        xe, _, natural = source_errors(
            source,
            x,
            y,
            cfg.n_points,
            gen,
            cfg.noise_std,
            cfg.max_shift,
            cfg.max_rounds,
            cfg.batch_size,
        )
        return xe, natural

    t0 = time.perf_counter()
    xe, natural = source_probes(source, "errors", x, y, cfg, gen, make)
    return xe, {
        "n_points": len(xe),
        "n_natural": natural,
        "probe_seconds": time.perf_counter() - t0,  # ~0 when reused
    }
