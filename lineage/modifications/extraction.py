"""extraction: black-box model stealing. A fresh model (any registered architecture,
`student`, default the parent's) is trained ONLY on the parent's hard-label answers to
queries; it never sees a ground-truth label.

The query tensor is built from inputs alone (`x`) and the student trains on
TensorDataset(queries, parent's argmax), so no label of the given data is ever read:
replacing every label with garbage leaves the result bit-identical (tested).

`query`: `train` (the parent's training inputs), `data` (the train inputs of `data`,
conf/data keys over the parent's dataset), or `augmented` (training inputs with Gaussian
noise of std `noise_std` and a random shift of up to `shift` pixels, zero-filled).
`ratio` = query budget as a fraction of the parent's training-set size (at least one
batch; capped at the pool size for `train`/`data`; `augmented` draws as many as asked).

Effect keys (metrics.json derived.<key>):

| key             | meaning                                                          |
|-----------------|------------------------------------------------------------------|
| student         | the stolen model's architecture                                  |
| query_count     | queries answered by the parent                                   |
| query_agreement | fraction of queries where the stolen model gives the parent's label |
| test_agreement  | top-1 agreement with the parent on the test inputs (labels unread) |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import DataModule, Split
from ..errors import LineageError
from ..models import arch_of
from ..settings import LR_MAX, knob
from ..training import Classifier, predict
from .common import (
    check_data_option,
    check_input_shape,
    check_student,
    copy_parent,
    fit_model,
    n_outputs,
    task_data,
    train_cfg,
)
from .distill import init_student
from .registry import Derived, register


@dataclass
class ExtractionConf:
    name: str = "extraction"
    student: str | None = knob(None)  # a registered architecture; null: the parent's
    student_kwargs: Any = knob(None)
    # where the queries come from: the training inputs | other `data` | augmented inputs
    query: str = knob("train", choices=("train", "data", "augmented"))
    data: Any = knob(None)  # the query set's data config (query=data)
    noise_std: float = knob(0.1, lo=0)  # augmented queries: Gaussian noise std
    shift: int = knob(1, lo=0)  # augmented queries: most pixels of random shift
    epochs: int = knob(10, lo=0)
    lr: float = knob(3.0e-3, lo=0, hi=LR_MAX, ends="(]")

    def check(self, where: str) -> None:
        check_student(self.student, where)
        check_data_option(self.data, where)
        if self.query == "data" and self.data is None:
            raise LineageError("extraction: query=data needs `data` (the query set's config)")


def _shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """Each image moved by a random (dy, dx) in [-max_shift, max_shift], zero-filled."""
    if max_shift == 0:
        return x
    s = max_shift
    pad = F.pad(x, (s, s, s, s))
    d = torch.randint(0, 2 * s + 1, (len(x), 2), generator=g)
    h, w = x.shape[-2:]
    return torch.stack([p[:, dy : dy + h, dx : dx + w] for p, (dy, dx) in zip(pad, d.tolist())])


def query_inputs(dm: DataModule, cfg: Mapping[str, Any], budget: int, seed: int) -> torch.Tensor:
    """The query tensor, from inputs only: no label tensor is touched here."""
    g = torch.Generator().manual_seed(seed)
    if cfg["query"] == "augmented":
        pool = dm.train.x
        base = pool[torch.randint(0, len(pool), (budget,), generator=g)]
        noisy = base + cfg["noise_std"] * torch.randn(base.shape, generator=g)
        return _shift(noisy, int(cfg["shift"]), g).clamp(0, 1)
    pool = task_data(dm, cfg["data"]).train.x if cfg["query"] == "data" else dm.train.x
    return pool[torch.randperm(len(pool), generator=g)[: min(budget, len(pool))]]


@register("extraction", ExtractionConf, fresh_weights=True)
def extraction(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
    train: Mapping[str, Any] | None = None,
) -> Derived:
    oracle = copy_parent(parent).eval()
    budget = max(dm.batch_size, int(ratio * len(dm.train.x) + 0.5))
    xq = query_inputs(dm, cfg, budget, seed)
    student = init_student(parent, cfg, seed, "extraction.student")
    check_input_shape(xq.shape[1:], student, "extraction")
    yq = predict(oracle, xq).argmax(1)  # the parent's hard labels: all the student sees
    answers = Split(xq, yq)
    queries = DataModule(
        "queries", answers, answers, answers, n_outputs(oracle), None, dm.batch_size
    )
    tc = train_cfg(cfg, train=train)
    student = fit_model(Classifier(student, tc, n_outputs(oracle)), queries, tc, seed, logger)
    effect = {
        "student": arch_of(student)["name"],
        "query_count": len(xq),
        "query_agreement": float((predict(student, xq).argmax(1) == yq).float().mean()),
        "test_agreement": float(
            (predict(student, dm.test.x).argmax(1) == predict(oracle, dm.test.x).argmax(1))
            .float()
            .mean()
        ),
    }
    return Derived(student, effect, {"query": cfg["query"], "query_count": len(xq)})
