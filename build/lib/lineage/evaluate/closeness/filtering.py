"""The AAAI 2025 point filter: keep the points that separate known relatives of the source
from known independent models, computed once per source and reused for many suspects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ...errors import LineageError
from ...runtime import device_of, eval_mode, ieee_fp32
from .. import sampling
from ..boundary import Model
from .measure import check_data, source_probe, source_side, suspect_probe, suspect_side
from .progress import progress_bar
from .settings import ClosenessConf, settings


@dataclass
class References:
    """Known relatives of the source, for the AAAI 2025 point filtering."""

    lineage: Sequence[Model] = ()
    independent: Sequence[Model] = ()


def check_candidates(candidates: torch.Tensor, n: int) -> torch.Tensor:
    idx = torch.as_tensor(candidates).cpu()
    if idx.dim() != 1 or idx.is_floating_point() or len(idx) == 0:
        raise LineageError("closeness: candidates must be a non-empty 1-D tensor of indices")
    if int(idx.min()) < 0 or int(idx.max()) >= n:
        raise LineageError(f"closeness: candidate indices must lie in 0..{n - 1}")
    return idx.long()


def filter_points(
    source: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    references: References,
    cfg: Mapping[str, Any] | ClosenessConf | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """AAAI 2025 filtering: indices of valid points (class-stratified order) that every
    known lineage reference matches and no known independent reference matches, at most
    filter_pool of them. The answer depends on the source and references only, so it can be
    computed once and passed to `closeness(..., candidates=...)` for many suspects."""
    c = asdict(settings(cfg))
    check_data(x, y)
    if not (references.lineage and references.independent):
        raise LineageError(
            "filter_points: needs at least one known lineage and one known independent reference"
        )
    return _filter_points(source, x, y, references, c, int(c["seed"] if seed is None else seed))[0]


def _filter_points(
    source: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    refs: References,
    c: Mapping[str, Any],
    seed: int,
) -> tuple[torch.Tensor, int]:
    want = int(c["filter_pool"] or c["max_points"])
    order = sampling.stratified_order(y, seed)
    block = max(int(c["batch_points"]), 512)  # a scan over the data: big blocks, few passes
    kept: list[torch.Tensor] = []
    n_kept = 0
    with eval_mode(source, *refs.lineage, *refs.independent), ieee_fp32(device_of(source)):
        src = source_probe(source, x, y, c)
        groups = [
            [suspect_probe(src, r, f"{kind} reference {i}", x, y, c) for i, r in enumerate(g)]
            for kind, g in (("lineage", refs.lineage), ("independent", refs.independent))
        ]
        bar = progress_bar(bool(c["progress"]), want, "filtering points")
        try:
            for a in range(0, len(order), block):
                side = source_side(source, src, x, y, order[a : a + block], c)
                side = side.take(side.valid)
                if len(side.index) == 0:
                    continue
                lin, ind = (
                    torch.stack([suspect_side(p, side, c).matched for p in g]) for g in groups
                )
                keep = sampling.consistent_points(lin, ind)
                kept.append(side.index[keep.to(side.index.device)].cpu())
                n_kept += int(keep.sum())
                if bar:
                    bar.update(int(keep.sum()))
                if n_kept >= want:
                    break
        finally:
            if bar:
                bar.close()
    pool = torch.cat(kept)[:want] if kept else torch.zeros(0, dtype=torch.long)
    if len(pool) == 0:
        raise LineageError(
            "closeness: no valid point left after filtering: no point is matched by "
            "every lineage reference and by no independent one"
        )
    return pool, src.evals + sum(p.evals for g in groups for p in g)
