"""chain: several modifications in a row, e.g. pruning -> finetune -> quantize.

Each step is {name, ratio, ...options}: a registered modification with its own ratio;
options it does not give come from that modification's options dataclass (its one home
of defaults and checks, which conf/modification/<name>.yaml only selects), so a chain
needs no Hydra composition and no config files at run time. The top-level `ratio` is the
ratio of any step that gives none. Every step is validated before the first one trains; an
error names the step.

Step i runs with seed + i, so a one-step chain equals the modification itself. The whole
chain goes into the lineage record as `chain`: [{name, ratio, options, effect, record}].
If the last step made a black box (quantize with dynamic_int8), the chain passes it on.

Effect keys (metrics.json derived.<key>):

| key            | meaning                                                          |
|----------------|------------------------------------------------------------------|
| steps          | number of steps                                                  |
| names          | step names joined by ">"                                         |
| step<i>.<key>  | step i's own effect keys (e.g. step0.sparsity, step2.bits)       |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from ..data import DataModule
from ..errors import LineageError
from ..settings import knob
from .registry import Derived, derive, options, register, validate


@dataclass
class ChainConf:
    name: str = "chain"
    # each step: {name, ratio, ...options}, of differing modifications (checked by `plan`)
    steps: list[dict[str, Any]] = knob(
        [
            {"name": "pruning", "ratio": 0.5},
            {"name": "finetune", "ratio": 0.3},
            {"name": "quantize", "ratio": 0.5},
        ]
    )

    def check_ratio(self, ratio: float) -> None:
        plan(asdict(self), ratio)


def plan(opts: Mapping[str, Any], ratio: float) -> list[tuple[dict[str, Any], float]]:
    """Each step's full options and ratio, all validated (nothing trains here)."""
    steps = opts.get("steps")
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
        raise LineageError(
            f"chain.steps must be a non-empty list of {{name, ratio, ...options}}; got {steps!r}"
        )
    out = []
    for i, step in enumerate(steps):
        if not isinstance(step, Mapping) or "name" not in step:
            raise LineageError(f"chain step {i}: must be a mapping with a 'name'; got {step!r}")
        if step["name"] == "chain":
            raise LineageError(f"chain step {i}: chains do not nest; list its steps instead")
        cfg = {k: v for k, v in step.items() if k != "ratio"}
        try:
            r = validate(cfg, step.get("ratio", ratio))
        except LineageError as e:
            raise LineageError(f"chain step {i} ({step['name']}): {e}") from None
        out.append((options(cfg), r))
    return out


@register("chain", ChainConf)
def chain(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
    train: Mapping[str, Any] | None = None,
) -> Derived:
    model = parent
    effect: dict[str, Any] = {}
    record: list[dict[str, Any]] = []
    d = Derived(parent)
    for i, (opts, r) in enumerate(plan(cfg, ratio)):
        d = derive(model, dm, opts, r, seed + i, logger, train)
        model = d.model
        effect[f"step{i}"] = {"name": opts["name"], **d.effect}
        record.append(
            {
                "name": opts["name"],
                "ratio": r,
                "options": {k: v for k, v in opts.items() if k != "name"},
                "effect": d.effect,
                **({"record": d.record} if d.record else {}),
            }
        )
    effect.update(steps=len(record), names=">".join(s["name"] for s in record))
    return Derived(model, effect, {"chain": record}, blackbox=d.blackbox)
