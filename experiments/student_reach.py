"""Students from fresh weights (issue 30): how much of its teacher does each one carry?

    python -m experiments.student_reach --preset mnist_lenet --zoo outputs/zoo

A distillation or extraction student never shares a weight with its parent, so only its
function can show where it came from, and what marks the parent's function as the parent's
are its own mistakes: the training points it gets wrong where every reference answers
otherwise (its *idiosyncratic* mistakes). A student taught by the parent's answers can copy
them; an independent model cannot. Each source (the parent, then every reference in the
parent's place, as the suspect-centred null does) scores the student's agreement with it
on that source's idiosyncratic mistakes. A student that copies its teacher more than it
copies models it never saw sits above the references' range; one inside that range
carries nothing of the parent that the parent's answers can show, to any evidence that
reads answers. Reads the preset's zoo (parents, references and students already built)
and the training split; prints one row per student.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from experiments import presets
from experiments.zoo_models import build_models, model_label
from lineage.evaluate.verdict import sample_variance
from lineage.modifications.registry import fresh_weight_modifications
from lineage.training import predict
from lineage.zoo import Zoo


def idiosyncratic(answers: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """For each source (a row of `answers`, S x N), the points it gets wrong while every
    other source gives another answer."""
    out = []
    for i in range(len(answers)):
        others = torch.cat([answers[:i], answers[i + 1 :]])
        out.append(((answers[i] != y) & (others != answers[i]).all(0)).nonzero().squeeze(1))
    return out


def agreement(answers: torch.Tensor, marks: list[torch.Tensor], suspect: torch.Tensor) -> list:
    """The suspect's share of each source's answers on that source's marked points (NaN
    where a source has none)."""
    return [
        float((suspect[m] == answers[i][m]).float().mean()) if len(m) else math.nan
        for i, m in enumerate(marks)
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mnist_lenet")
    p.add_argument("--zoo", type=Path, default=Path("outputs/zoo"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    preset = presets.load(args.preset, None, [])
    base = [*preset.overrides, "logger=none"]
    _, dm, families, _ = build_models(preset, Zoo(args.zoo), base, lambda s: None)
    x, y = dm.train.x, dm.train.y
    students = set(fresh_weight_modifications())
    print("| parent | student | ratio | accuracy | with the parent | with each reference | z |")
    print("|---|---|---|---|---|---|---|")
    for f in families:
        answers = torch.stack([predict(s.model, x).argmax(1) for s in [f.parent, *f.references]])
        marks = idiosyncratic(answers, y)
        for e in f.derived:
            mod, ratio = model_label(e.meta)
            if mod not in students:
                continue
            a = agreement(answers, marks, predict(e.model, x).argmax(1))
            refs = [v for v in a[1:] if not math.isnan(v)]
            mean = sum(refs) / len(refs)
            sd = math.sqrt(sample_variance(refs))
            print(
                f"| {f.parent.id} | {mod} | {ratio} | {e.meta['accuracy']:.3f} | {a[0]:.3f} | "
                f"{min(refs):.3f}-{max(refs):.3f} | {(a[0] - mean) / max(sd, 1e-9):+.1f} |"
            )
    print(f"\nidiosyncratic mistakes per source: {[len(m) for m in marks]} (last parent)")


if __name__ == "__main__":
    main()
