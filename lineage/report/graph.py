"""The sweep's lineage records as a graph: parent -> derived edges from the zoo's
lineage.jsonl (lineage.zoo.Zoo.edges, found through each job's `paths.zoo`), followed
upwards so a model derived from a derived model shows its whole chain; where no zoo is
found, the edges each job's metrics name (parent.id -> derived.id). Drawn with networkx
and matplotlib, layered from the roots, derived models coloured by their job's verdict.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ..evaluate.verdict import answer
from ..results import isna
from ..text import printable
from ..zoo import Zoo
from .collect import _get, _yaml, job_config
from .figures import DPI, Skip

log = logging.getLogger("lineage")

COLOURS = {"lineage": "#2ca02c", "not lineage": "#d62728", "undetermined": "#999999"}
ROOT_COLOUR = "#1f77b4"
MAX_NODES = 200  # beyond this the picture is unreadable; the table still lists every edge


def _zoo_dirs(t: pd.DataFrame) -> list[Path]:
    """Each job's zoo: `paths.zoo` of its config, relative paths read from where Hydra
    started the job (hydra.runtime.cwd) or else from the job's own folder."""
    found: list[Path] = []
    for d in map(Path, t["job_dir"]):
        zoo = _get(job_config(d) or {}, "paths.zoo")
        if not isinstance(zoo, str) or not zoo:
            continue
        z = Path(zoo).expanduser()
        if not z.is_absolute():
            cwd = _get(_yaml(d / ".hydra" / "hydra.yaml") or {}, "hydra.runtime.cwd")
            bases = [Path(cwd)] if isinstance(cwd, str) else []
            z = next((b / z for b in [*bases, d] if (b / z).is_dir()), d / z)
        if z not in found and (z / "lineage.jsonl").is_file():
            found.append(z)
    return found


def lineage_edges(t: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """(parent, child, modification, ratio, verdict) for the sweep's models, and where the
    edges came from."""
    verdicts = {
        str(r["derived.id"]): answer(r.get("derived.verdict.is_lineage"))
        for _, r in t.iterrows()
        if not isna(r.get("derived.id"))
    }
    edges: dict[str, dict[str, Any]] = {}
    zoos = _zoo_dirs(t) if "job_dir" in t.columns else []
    for z in zoos:
        for child, e in Zoo(z).edges().items():
            edges.setdefault(child, e)
    source = "lineage.jsonl of " + ", ".join(printable(z) for z in zoos)
    rows = []
    if edges:
        todo, done = list(verdicts), set()
        while todo:  # the sweep's models, then each one's ancestors
            child = todo.pop()
            if child in done or child not in edges:
                continue
            done.add(child)
            e = edges[child]
            rows.append((e.get("parent"), child, e.get("modification"), e.get("ratio")))
            if isinstance(e.get("parent"), str):
                todo.append(e["parent"])
    if not rows:
        source = "the jobs' metrics (parent.id -> derived.id)"
        for _, r in t.iterrows():
            if not isna(r.get("parent.id")) and not isna(r.get("derived.id")):
                rows.append(
                    (r["parent.id"], r["derived.id"], r.get("modification"), r.get("ratio"))
                )
    if not rows:
        raise Skip("no lineage.jsonl found through paths.zoo and no job recorded parent.id")
    df = pd.DataFrame(rows, columns=["parent", "child", "modification", "ratio"])
    df = df.drop_duplicates("child").sort_values(["parent", "modification", "ratio", "child"])
    df["verdict"] = [verdicts.get(str(c), "") for c in df["child"]]
    return df.reset_index(drop=True), source


def graph_figure(edges: pd.DataFrame, out_dir: Path) -> Path:
    import networkx as nx

    g = nx.DiGraph()
    for _, e in edges.iterrows():
        mod = "" if isna(e["modification"]) else printable(e["modification"])
        ratio = "" if isna(e["ratio"]) else f" {printable(e['ratio'])}"
        g.add_edge(printable(e["parent"]), printable(e["child"]), label=mod + ratio)
    if g.number_of_nodes() > MAX_NODES:
        raise Skip(f"{g.number_of_nodes()} models: too many to draw (the table lists them)")
    try:
        generations = [sorted(gen) for gen in nx.topological_generations(g)]
    except nx.NetworkXUnfeasible:
        raise Skip("the lineage records hold a cycle") from None
    for layer, gen in enumerate(generations):  # a model's layer: its distance from a root
        for n in gen:
            g.nodes[n]["layer"] = layer
    pos = nx.multipartite_layout(g, subset_key="layer")
    widest, layers = max(map(len, generations)), len(generations)
    fig = Figure(
        figsize=(max(6.0, 3.2 * layers), max(3.0, 0.42 * widest + 1)), dpi=DPI, layout="constrained"
    )
    ax = fig.add_subplot()
    verdict = dict(zip(map(printable, edges["child"]), edges["verdict"]))
    colours = [COLOURS.get(verdict.get(n, ""), ROOT_COLOUR) for n in g.nodes]
    nx.draw_networkx_edges(g, pos, ax=ax, edge_color="0.6", arrows=True, node_size=120)
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colours, node_size=120)
    for n, (x, y) in pos.items():  # a parent's label left of it, clear of its edges
        left = g.out_degree(n) > 0
        ax.annotate(
            n, (x, y), xytext=(-7 if left else 7, 0), textcoords="offset points",
            ha="right" if left else "left", va="center", fontsize=7,
        )  # fmt: skip
    nx.draw_networkx_edge_labels(
        g, pos, ax=ax, edge_labels=nx.get_edge_attributes(g, "label"), font_size=6,
        label_pos=0.7, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
    )  # fmt: skip
    for label, c in [("parent / not judged", ROOT_COLOUR), *COLOURS.items()]:
        ax.scatter([], [], color=c, label=label)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.set_title("Lineage records: parent -> derived (colour: the job's verdict)", fontsize=10)
    ax.margins(x=0.25, y=0.08)
    ax.axis("off")
    path = out_dir / "lineage_graph.png"
    fig.savefig(path, dpi=DPI, format="png")
    return path
