"""Decision-plane pictures: each model's decision regions on the plane through three data
points, one panel per model, as in the paper's figures. A derived model that keeps its
parent's boundaries shows the same map; an independent one redraws it."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import nn

from .errors import LineageError
from .text import plain_figure_text, printable
from .utils import atomic_write

Model = Callable[[torch.Tensor], torch.Tensor]


def plane(
    x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Orthonormal axes (u, v) of the plane through x1, x2, x3 (origin x1; u towards x2)
    and the points' (a, b) coordinates in it, shape (3, 2). Axes are orthonormal so the
    picture keeps input-space distances."""
    if not (x1.shape == x2.shape == x3.shape):
        raise LineageError(
            f"decision_plane: the three points differ in shape "
            f"{tuple(x1.shape)}, {tuple(x2.shape)}, {tuple(x3.shape)}"
        )
    p1, p2, p3 = (p.detach().double().flatten() for p in (x1, x2, x3))
    if not all(torch.isfinite(p).all() for p in (p1, p2, p3)):
        raise LineageError("decision_plane: the points hold NaN or Inf values")
    u = p2 - p1
    if u.norm() == 0:
        raise LineageError("decision_plane: x1 and x2 are the same point")
    u = u / u.norm()
    w = p3 - p1
    v = w - (w @ u) * u
    if v.norm() <= 1e-9 * max(1.0, float(w.norm())):
        raise LineageError("decision_plane: the three points lie on one line")
    v = v / v.norm()
    coords = torch.stack(
        [
            torch.zeros(2, dtype=torch.float64),
            torch.stack([(p2 - p1) @ u, (p2 - p1) @ v]),
            torch.stack([w @ u, w @ v]),
        ]
    )
    return u, v, coords


@torch.no_grad()
def decision_regions(
    model: Model,
    x1: torch.Tensor,
    x2: torch.Tensor,
    x3: torch.Tensor,
    resolution: int = 150,
    padding: float = 0.5,
    batch_size: int = 1024,
) -> tuple[torch.Tensor, tuple[float, float, float, float], torch.Tensor]:
    """The model's predicted class on a resolution x resolution grid over the plane.

    Returns (labels (rows = b from low to high, cols = a), extent (a0, a1, b0, b1), the
    three points' plane coordinates). `padding` widens the box around the points by that
    fraction of its span on every side."""
    if resolution < 2:
        raise LineageError(f"decision_plane: resolution={resolution} must be at least 2")
    u, v, coords = plane(x1, x2, x3)
    lo, hi = coords.min(0).values, coords.max(0).values
    span = (hi - lo).clamp(min=1e-6)
    lo, hi = lo - padding * span, hi + padding * span
    a = torch.linspace(float(lo[0]), float(hi[0]), resolution, dtype=torch.float64)
    b = torch.linspace(float(lo[1]), float(hi[1]), resolution, dtype=torch.float64)
    bb, aa = torch.meshgrid(b, a, indexing="ij")
    origin = x1.detach().double().flatten()
    flat = origin + aa.reshape(-1, 1) * u + bb.reshape(-1, 1) * v
    dev = _device_of(model)
    if isinstance(model, nn.Module):
        model.eval()
    labels = []
    for i in range(0, len(flat), batch_size):
        rows = flat[i : i + batch_size].to(torch.float32).view(-1, *x1.shape).to(dev)
        out = model(rows)
        labels.append((out.argmax(1) if out.dim() == 2 else out).long().cpu())
    grid = torch.cat(labels).view(resolution, resolution)
    return grid, (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])), coords


def _device_of(model: Model) -> torch.device:
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
    return torch.device("cpu")


def decision_plane(
    models: Mapping[str, Model] | Sequence[Model],
    x1: torch.Tensor,
    x2: torch.Tensor,
    x3: torch.Tensor,
    path: str | Path,
    resolution: int = 150,
    padding: float = 0.5,
    panel_size: float = 3.0,
    dpi: int = 100,
    num_classes: int | None = None,
    title: str | None = None,
) -> Path:
    """Draw each model's decision regions on the plane through x1, x2, x3 (single inputs,
    shape (C, H, W)) to a PNG of panel_size*len(models) x panel_size inches at `dpi`.
    Models may answer logits or labels; colours mean the same class in every panel."""
    named = (
        dict(models)
        if isinstance(models, Mapping)
        else {f"model {i}": m for i, m in enumerate(models)}
    )
    if not named:
        raise LineageError("decision_plane: no models given")
    maps = {name: decision_regions(m, x1, x2, x3, resolution, padding) for name, m in named.items()}
    k = num_classes or int(max(int(g.max()) for g, _, _ in maps.values())) + 1
    with plain_figure_text():  # model names are labels: plain text, never mathtext
        buf = _draw(maps, k, panel_size, dpi, title)
    return atomic_write(path, buf.getvalue())


def _draw(
    maps: Mapping[str, tuple[torch.Tensor, tuple[float, float, float, float], torch.Tensor]],
    k: int,
    panel_size: float,
    dpi: int,
    title: str | None,
) -> io.BytesIO:
    import matplotlib

    base = "tab10" if k <= 10 else "tab20"
    colours = matplotlib.colormaps[base].resampled(max(k, 2))
    cmap = ListedColormap([colours(i) for i in range(max(k, 2))])
    norm = BoundaryNorm([i - 0.5 for i in range(max(k, 2) + 1)], cmap.N)
    fig = Figure(figsize=(panel_size * len(maps), panel_size), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    for ax, (name, (grid, extent, coords)) in zip(axes, maps.items()):
        ax.imshow(
            grid.numpy(),
            origin="lower",
            extent=extent,
            cmap=cmap,
            norm=norm,
            interpolation="nearest",
            aspect="auto",
        )
        ax.scatter(coords[:, 0].numpy(), coords[:, 1].numpy(), c="black", s=12, marker="o")
        for j, (a, b) in enumerate(coords.tolist()):
            ax.annotate(f"x{j + 1}", (a, b), xytext=(3, 3), textcoords="offset points", fontsize=7)
        ax.set_title(printable(name), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    present = sorted({int(v) for g, _, _ in maps.values() for v in g.unique().tolist()})
    handles = [Patch(color=cmap(k), label=f"class {k}") for k in present]
    fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False)
    if title:
        fig.suptitle(printable(title), fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf
