"""The lineage tree of a model collection: which model was derived from which.

    t = lineage.tree({"a": model_a, "b": model_b, ...}, x, y, references=refs)
    t.edges, t.roots, t.evaluate(truth)   # truth: {model id: its parent's id or None}

**Edges.** Each model A that can be a parent (an nn.Module answering the task's classes) is
calibrated once against the references (`lineage.engine.calibrate`), and every other model
B it may be the parent of is judged against it (`judge`). A pair is kept when its verdict
is lineage (p <= the verdict's alpha). The forest is Edmonds' maximum branching over the
kept, oriented edges (networkx): each model takes at most one parent, a model with no kept
incoming edge is a root, and a chain A -> B -> C comes out as two edges because B -> C
outweighs A -> C (`weight`: the verdict score -log10 p, or the weight distance where the
distance evidence applies).

**Direction** (`direction`). Both A -> B and B -> A are usually significant, so the
orientation of a kept pair is a rule of its own:

- `kurtosis` (the default; MoTHer, ICLR 2025): training, fine-tuning and pruning raise the
  kurtosis of a network's weights, so the parent is the model of lower kurtosis. Only that
  direction is judged: half the judgements. Models of equal kurtosis (a permuted copy) fall
  back to `score`.
- `score`: the direction with the higher verdict score (both directions judged).
- `accuracy`: the more accurate model is the parent (a child is usually no better).

Measured on tests/test_tree.py's digits collection (a parent; a magnitude-pruned child, a
fine-tuned child, a noised grandchild under the pruned child; two independents) built
from two seeds (0 and 100), as the share of recovered edges between an ancestor and a
descendant that point down: kurtosis 3/3 and 3/3 (the tree exact both times), score 3/3
and 1/3 (the grandchild's verdict against its pruned parent outscores the reverse, and
the forest hangs from it), accuracy 1/3 and 1/2 (the fine-tuned child beats its parent).

**Cost.** What depends on one model is computed once: its calibration as a parent, its
accuracy, kurtosis and predictions, and what the suspect-centred evidence measures of it
with each reference in the parent's place (calibrate's `share`): a pair then costs one
measurement per kind, not one plus one per reference. Calibrations are `lean`: the parent
is measured against the references by the parent-centred kinds only, which leaves every
p-value as it is and halves a calibration (MNIST LeNet: 6.6 s against 14.6 s).

Two screens skip a pair before the full test (both off by default; skipped pairs are in
`Tree.pruned`, and `evaluate` gives the screen's recall of the true parent-child pairs):

- `candidates=k`: a pair is judged only when one model is among the other's k nearest in
  weight space (the distance evidence's aligned relative distance, `weight_gap`) or its k
  most-agreeing on the first `prune_points` test points (which reaches students of other
  widths). N models then cost about N * 2k judgements, not N^2 / 2. Its recall falls where
  a family is large: on the MNIST Results zoo (80 models, families of 30) k=3 kept 40% of
  the true parent-child pairs, each model's nearest being its siblings and the parent's
  exact permuted copies (README, `lineage tree`).
- `prune=margin`: a pair is skipped when the two models agree on the first `prune_points`
  points less than the most-agreeing pair of references does, less the margin: less than
  two unrelated models can. On the test collection, agreements are 0.89-0.95 between
  related models, 0.79-0.85 between unrelated ones and 0.76-0.87 between references:
  `prune=0` skipped all 9 unrelated pairs and none of the 6 related ones (recall 1.0). A
  heavily modified child (pruning or noise at 0.9) may agree less with its parent than
  two independents do: measure the margin on the zoo before relying on it.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapters import logits_of, n_outputs
from .errors import LineageError

log = logging.getLogger("lineage")

DIRECTIONS = ("kurtosis", "score", "accuracy")
WEIGHTS = ("score", "distance")
TIE = 1e-6  # kurtosis differences below this (relative) say nothing: a permuted copy


@dataclasses.dataclass
class Pair:
    """One judged ordered pair: `parent` calibrated, `child` judged against it."""

    parent: str
    child: str
    p_value: float
    score: float  # the verdict score, -log10 p
    decided_by: str
    closeness: float | None  # the closeness evidence's score, where it applied
    distance: float | None  # the weight distance after alignment, where it applied

    @property
    def key(self) -> tuple[str, str]:
        return (self.parent, self.child)


@dataclasses.dataclass
class Edge(Pair):
    """A recovered edge: the pair as oriented, and the judgement the other way if made."""

    weight: float = 0.0  # what the maximum branching maximised
    reverse_p_value: float | None = None


@dataclasses.dataclass
class Tree:
    ids: list[str]
    edges: list[Edge]
    roots: list[str]
    pairs: dict[tuple[str, str], Pair]  # every judged pair
    pruned: list[tuple[str, str]]  # unordered pairs skipped before judging
    accuracy: dict[str, float | None]
    kurtosis: dict[str, float | None]
    alpha: float
    direction: str
    weight: str
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    # ordered pairs whose verdict could not be made, and why (e.g. a would-be parent that
    # classifies no probe point right has no closeness): not edges, never the whole tree
    unjudged: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)

    def parent_of(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {i: None for i in self.ids}
        out.update({e.child: e.parent for e in self.edges})
        return out

    def graph(self) -> Any:
        """The forest as a networkx DiGraph (nodes: accuracy, kurtosis; edges: the rest)."""
        import networkx as nx

        g = nx.DiGraph()
        for i in self.ids:
            g.add_node(i, accuracy=_num(self.accuracy[i]), kurtosis=_num(self.kurtosis[i]))
        for e in self.edges:
            attrs = {
                k: _num(v) for k, v in dataclasses.asdict(e).items() if k not in ("parent", "child")
            }
            g.add_edge(e.parent, e.child, **attrs)
        return g

    def evaluate(self, truth: Mapping[str, str | None]) -> dict[str, Any]:
        """Against the true parents (`truth`: id -> parent id, None for a root; ids not in
        `truth` are left out): parent recovery over the models whose parent is in the
        collection, root recovery over the others, and direction accuracy over the
        recovered edges that join a true ancestor and descendant."""
        got = self.parent_of()
        known = [i for i in self.ids if i in truth]
        children = [i for i in known if truth[i] in got]
        roots = [i for i in known if truth[i] not in got]
        related = []
        for e in self.edges:
            down = _is_ancestor(truth, e.parent, e.child)
            if down or _is_ancestor(truth, e.child, e.parent):
                related.append(down)
        out: dict[str, Any] = {
            "parent_recovery": _share(sum(got[i] == truth[i] for i in children), len(children)),
            "root_recovery": _share(sum(got[i] is None for i in roots), len(roots)),
            "direction_accuracy": _share(sum(related), len(related)),
            "children": len(children),
            "roots": len(roots),
            "related_edges": len(related),
        }
        # the share of true parent-child pairs the cheap screen left to the full test
        pairs = [frozenset((i, truth[i])) for i in children]
        skipped = {frozenset(p) for p in self.pruned}
        out["screen_recall"] = _share(sum(p not in skipped for p in pairs), len(pairs))
        out["wrong"] = [
            {"model": i, "recovered": got[i], "true": truth[i]}
            for i in known
            if got[i] != (truth[i] if truth[i] in got else None)
        ]
        return out


def _is_ancestor(truth: Mapping[str, str | None], a: str, b: str) -> bool:
    seen = set()
    p = truth.get(b)
    while p is not None and p not in seen:
        if p == a:
            return True
        seen.add(p)
        p = truth.get(p)
    return False


def _share(k: int, n: int) -> float | None:
    return k / n if n else None


def _num(v: Any) -> Any:
    # GraphML takes no None: an absent measurement is NaN there
    return float("nan") if v is None else v


def kurtosis(model: nn.Module) -> float | None:
    """The kurtosis of all weight matrices and kernels together (MoTHer's statistic)."""
    ws = [p.detach().flatten().double() for p in model.parameters() if p.dim() > 1]
    if not ws:
        return None
    w = torch.cat(ws)
    w = w - w.mean()
    var = float((w**2).mean())
    return float((w**4).mean()) / var**2 if var > 0 else None


def _predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from .runtime import eval_mode

    with eval_mode(model), torch.no_grad():
        return logits_of(model(x)).argmax(1)


def _agreement(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    if a is None or b is None:
        return None
    return float((a == b).float().mean())


def _accuracy(pred: torch.Tensor | None, y: torch.Tensor) -> float | None:
    return None if pred is None else float((pred == y).float().mean())


def _pair(a: str, b: str, v: Any) -> Pair:
    d = v.decision
    clo, dist = v.evidence.get("closeness"), v.evidence.get("distance")
    return Pair(
        a,
        b,
        float(d.p_value),
        float(d.verdict_score),
        d.decided_by,
        None if clo is None else float(clo.score),
        None if dist is None or dist.distance is None else float(dist.distance),
    )


def tree(
    models: Mapping[str, nn.Module] | Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    references: Sequence[nn.Module] = (),
    *,
    direction: str = "kurtosis",
    weight: str = "score",
    prune: float | None = None,
    prune_points: int = 300,
    candidates: int | None = None,
    records: Mapping[str, Mapping[str, Any] | None] | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    journal: str | Path | None = None,
    **groups: Any,
) -> Tree:
    """Recover the lineage forest of `models` (a mapping id -> model, or a sequence: ids
    "0", "1", ...) on the task's test points `x, y`, calibrated on `references`
    (independent models of the same task, none of them in `models`). `records`: each
    model's lineage record where one is known (kept channels of a structured prune; never
    read for who the parent is). Options and groups are calibrate's (verdict=, closeness=,
    ...); see the module docstring for `direction`, `weight`, `candidates` and `prune`.
    `journal`: a JSON-lines file that keeps every judged pair, so that a rerun of an
    interrupted tree judges only what is left (lineage.tree_journal)."""
    from .engine import calibrate, judge, settings
    from .tree_journal import Journal

    named = (
        dict(models) if isinstance(models, Mapping) else {str(i): m for i, m in enumerate(models)}
    )
    if len(named) < 2:
        raise LineageError(f"a tree needs at least 2 models, got {len(named)}")
    if direction not in DIRECTIONS:
        raise LineageError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    if weight not in WEIGHTS:
        raise LineageError(f"weight must be one of {', '.join(WEIGHTS)}, not {weight!r}")
    if candidates is not None and candidates < 1:
        raise LineageError(f"candidates must be at least 1, got {candidates}")
    for i, m in named.items():
        if not isinstance(m, nn.Module):
            raise LineageError(f"model {i}: expected an nn.Module, got {type(m).__name__}")
    opts = settings(options, **groups)
    verdict = opts["verdict"]
    if len(references) < verdict.min_references:
        raise LineageError(
            f"{len(references)} references: the verdict needs at least "
            f"{verdict.min_references} independent models of the task to calibrate on"
        )
    t0 = time.perf_counter()
    ids = list(named)
    classes = n_outputs(references[0], x)
    # a model answering other classes (a transfer) can be a child, never a parent here
    can_parent = {i: n_outputs(named[i], x) == classes for i in ids}
    full = {i: _predictions(named[i], x) if can_parent[i] else None for i in ids}
    accuracy = {i: _accuracy(full[i], y) for i in ids}
    xs = x[:prune_points]
    pred = {i: None if p is None else p[:prune_points] for i, p in full.items()}
    kurt = {i: kurtosis(named[i]) for i in ids}
    floor = None
    if prune is not None:
        rp = [_predictions(r, xs) for r in references]
        floor = max(_agreement(a, b) or 0.0 for a, b in itertools.combinations(rp, 2)) - prune
    near = None if candidates is None else nearest(named, pred, candidates)
    todo: set[tuple[str, str]] = set()
    pruned = []
    for a, b in itertools.combinations(ids, 2):
        agree = _agreement(pred[a], pred[b])
        far = near is not None and b not in near[a] and a not in near[b]
        if far or (floor is not None and agree is not None and agree < floor):
            pruned.append((a, b))
            continue
        for p, c in _directions(a, b, direction, kurt, accuracy):
            if can_parent[p]:
                todo.add((p, c))
    seconds = {"prepare_s": time.perf_counter() - t0, "calibrate_s": 0.0, "judge_s": 0.0}
    parents = [a for a in ids if any(p == a for p, _ in todo)]
    log.info(
        "tree: %d ordered pairs to judge from %d parents (%d of %d pairs skipped by the screen)",
        len(todo), len(parents), len(pruned), len(ids) * (len(ids) - 1) // 2,
    )  # fmt: skip
    pairs: dict[tuple[str, str], Pair] = {}
    unjudged: dict[tuple[str, str], str] = {}  # ordered pairs no verdict could be made for
    book = Journal(journal, named, records, references, x, y, seed, opts)
    shared: Any = True  # the first calibration's references in the parent's place, for all
    for k, a in enumerate(parents, 1):
        mine = sorted(c for p, c in todo if p == a)
        mine = [b for b in mine if not book.recall(a, b, pairs, unjudged)]
        log.info("tree: parent %d/%d %s, %d pairs", k, len(parents), a, len(mine))
        if not mine:  # all judged by an earlier run: no calibration needed
            continue
        t1 = time.perf_counter()
        try:
            cal = calibrate(
                named[a], references, x, y, seed=seed, options=options, share=shared,
                lean=True, **groups,
            )  # fmt: skip
        except LineageError as e:  # e.g. a model that classifies no probe point right
            log.warning("tree: %s cannot be a parent here: %s", a, e)
            for b in mine:
                unjudged[(a, b)] = str(e)
                book.keep(a, b, str(e))
            continue
        finally:
            seconds["calibrate_s"] += time.perf_counter() - t1
        shared = cal
        for b in mine:
            t1 = time.perf_counter()
            rec = (records or {}).get(b)
            try:
                v = judge(named[a], named[b], x, y, calibration=cal, record=rec)
                pairs[(a, b)] = _pair(a, b, v)
                book.keep(a, b, pairs[(a, b)])
            except LineageError as e:
                log.warning("tree: %s -> %s not judged: %s", a, b, e)
                unjudged[(a, b)] = str(e)
                book.keep(a, b, str(e))
            seconds["judge_s"] += time.perf_counter() - t1
    edges, roots = _forest(ids, pairs, verdict.alpha, direction, weight, kurt, accuracy)
    seconds["total_s"] = time.perf_counter() - t0
    return Tree(ids, edges, roots, pairs, pruned, accuracy, kurt, verdict.alpha, direction,
                weight, seconds, unjudged)  # fmt: skip


def weight_gap(
    a: nn.Module, b: nn.Module, spec: Any = None, head: str | None = None
) -> float | None:
    """The distance evidence's relative weight distance of `b` from `a` once aligned
    (lineage.evaluate.distance.weight_distance: weight matching, pruned widths mapped back,
    a new head left out); None where no weight-space route joins them (other layers).
    `spec`, `head`: `a`'s permutation spec and head, when already known."""
    from .adapters import permutation_spec
    from .evaluate.distance import DistanceConf, weight_distance

    try:
        spec = permutation_spec(a) if spec is None else spec
        return weight_distance(a, b, None, head, spec, DistanceConf()).distance
    except LineageError:
        return None


def nearest(
    models: Mapping[str, nn.Module],
    pred: Mapping[str, torch.Tensor | None],
    k: int,
) -> dict[str, set[str]]:
    """Each model's candidate relatives: the k models closest to it in weight space (after
    weight matching) and the k that agree most with its predictions (which reach models of
    other architectures: students). A pair is judged when either side names the other."""
    from .adapters import find_head, permutation_spec

    ids = list(models)
    log.info("tree: screening %d pairs in weight space", len(ids) * (len(ids) - 1) // 2)
    specs = {i: permutation_spec(m) for i, m in models.items()}  # once a model, not a pair
    heads = {i: find_head(m) for i, m in models.items()}
    gap: dict[tuple[str, str], float] = {}
    agree: dict[tuple[str, str], float] = {}
    for a, b in itertools.combinations(ids, 2):
        d = weight_gap(models[a], models[b], specs[a], heads[a])
        if d is not None:
            gap[(a, b)] = gap[(b, a)] = d
        ag = _agreement(pred[a], pred[b])
        if ag is not None:
            agree[(a, b)] = agree[(b, a)] = ag
    out = {}
    for a in ids:
        others = [b for b in ids if b != a]
        by_gap = sorted((gap[(a, b)], b) for b in others if (a, b) in gap)[:k]
        by_agree = sorted((-agree[(a, b)], b) for b in others if (a, b) in agree)[:k]
        out[a] = {b for _, b in by_gap} | {b for _, b in by_agree}
    return out


def _directions(
    a: str,
    b: str,
    rule: str,
    kurt: Mapping[str, float | None],
    accuracy: Mapping[str, float | None],
) -> list[tuple[str, str]]:
    """The ordered pairs to judge: the one the rule orients, or both where it cannot."""
    key = kurt if rule == "kurtosis" else accuracy if rule == "accuracy" else None
    if key is not None:
        ka, kb = key[a], key[b]
        if ka is not None and kb is not None and abs(ka - kb) > TIE * max(abs(ka), abs(kb), 1):
            # kurtosis: the parent's is lower; accuracy: the parent's is higher
            return [(a, b)] if (ka < kb) == (rule == "kurtosis") else [(b, a)]
    return [(a, b), (b, a)]


def _forest(
    ids: list[str],
    pairs: Mapping[tuple[str, str], Pair],
    alpha: float,
    rule: str,
    weight: str,
    kurt: Mapping[str, float | None],
    accuracy: Mapping[str, float | None],
) -> tuple[list[Edge], list[str]]:
    """Orient each kept pair, then take Edmonds' maximum branching over them."""
    import networkx as nx
    from networkx.algorithms.tree.branchings import maximum_branching

    g = nx.DiGraph()
    g.add_nodes_from(ids)
    candidates: dict[tuple[str, str], Edge] = {}
    for a, b in itertools.combinations(ids, 2):
        ab, ba = pairs.get((a, b)), pairs.get((b, a))
        judged = [p for p in (ab, ba) if p is not None]
        if not judged or min(p.p_value for p in judged) > alpha:
            continue
        if ab is not None and ba is not None:  # both judged: the rule fell back to the score
            fwd, back = (ab, ba) if ab.score >= ba.score else (ba, ab)
        else:
            fwd, back = judged[0], None
        e = Edge(**dataclasses.asdict(fwd))
        e.reverse_p_value = None if back is None else back.p_value
        e.weight = _weight(judged, weight)
        candidates[e.key] = e
        g.add_edge(e.parent, e.child, weight=e.weight)
    chosen = maximum_branching(g, attr="weight")
    edges = sorted((candidates[k] for k in chosen.edges), key=lambda e: ids.index(e.child))
    children = {e.child for e in edges}
    return edges, [i for i in ids if i not in children]


def _weight(judged: Sequence[Pair], weight: str) -> float:
    """The pair's strength, whichever way it was judged: the higher verdict score s, or
    the smaller weight distance d. The two are on other scales, so with `distance` a pair
    the distance applied to weighs 1 + 1 / (1 + d), in (1, 2], above any pair it did not
    apply to (a student of other widths), which weighs 1 - 1 / (1 + s), in (0, 1)."""
    s = max(p.score for p in judged)
    if weight == "score":
        return s
    ds = [p.distance for p in judged if p.distance is not None and math.isfinite(p.distance)]
    return 1.0 + 1.0 / (1.0 + min(ds)) if ds else 1.0 - 1.0 / (1.0 + s)
