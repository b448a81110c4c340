"""The lineage forest as a picture: each tree drawn top-down from its root, nodes coloured
by root and labelled with id and accuracy, edges with the closeness score where closeness
applied (else the verdict score, marked "s")."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .text import plain_figure_text, printable
from .utils import atomic_write


def layout(t: Any) -> dict[str, tuple[float, float]]:
    """x: leaves in order of the trees, a parent above the middle of its children; y: depth."""
    children: dict[str, list[str]] = {i: [] for i in t.ids}
    for e in t.edges:
        children[e.parent].append(e.child)
    pos: dict[str, tuple[float, float]] = {}
    nxt = [0.0]

    def place(node: str, depth: int) -> float:
        xs = [place(c, depth + 1) for c in children[node]]
        if xs:
            x = sum(xs) / len(xs)
        else:
            x, nxt[0] = nxt[0], nxt[0] + 1
        pos[node] = (x, -float(depth))
        return x

    for r in t.roots:
        place(r, 0)
    return pos


def picture(t: Any, path: Path, dpi: int = 110) -> Path:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pos = layout(t)
    root_of = {r: r for r in t.roots}
    for e in sorted(t.edges, key=lambda e: -pos[e.child][1]):  # parents before children
        root_of[e.child] = root_of[e.parent]
    colours = matplotlib.colormaps["tab10" if len(t.roots) <= 10 else "tab20"]
    colour = {r: colours(i % colours.N) for i, r in enumerate(t.roots)}
    leaves = 1 + max(x for x, _ in pos.values())
    # a zoo's forest is wide: past 25 leaves the picture stops growing and the text shrinks
    width = max(4.0, 1.6 * min(leaves, 25))
    size = 8 if leaves <= 25 else 5
    height = max(3.0, 1.5 * (1 - min(y for _, y in pos.values())))
    with plain_figure_text():
        fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        for e in t.edges:
            (x0, y0), (x1, y1) = pos[e.parent], pos[e.child]
            ax.annotate("", (x1, y1 + 0.12), (x0, y0 - 0.12),
                        arrowprops={"arrowstyle": "-|>", "color": "0.3"})  # fmt: skip
            label = f"{e.closeness:.2f}" if e.closeness is not None else f"s {e.score:.1f}"
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, label, fontsize=size, ha="center",
                    va="center", backgroundcolor="white")  # fmt: skip
        for node, (x, y) in pos.items():
            acc = t.accuracy.get(node)
            text = printable(node) + ("" if acc is None else f"\nacc {acc:.3f}")
            box = {"boxstyle": "round", "fc": colour[root_of[node]], "alpha": 0.5}
            ax.text(x, y, text, ha="center", va="center", fontsize=size, bbox=box)
        xs = [x for x, _ in pos.values()]
        ys = [y for _, y in pos.values()]
        ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
        ax.set_ylim(min(ys) - 0.5, max(ys) + 0.5)
        ax.set_axis_off()
        ax.set_title("lineage tree (edge labels: closeness score)", fontsize=9)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return atomic_write(path, buf.getvalue())
