"""The zoo and all five experiments of the paper, in order, for one preset.

    python experiments/run_all.py --preset digits_mlp     # minutes
    python experiments/run_all.py --preset mnist_lenet    # < 60 min on a 2-core CPU
    bash scripts/device_cifar10.sh                        # the reduced CIFAR-10 zoo, one GPU

Equivalent to running experiments/zoo.py, then determination.py, closeness.py, sampling.py,
compare.py and runtime.py with the same --preset; every table and figure lands under
outputs/experiments/<preset>/. Rerunning resumes: cached models and judged pairs are reused.
"""
# ruff: noqa: E402  (the repository root goes on sys.path first: this file runs as a script)

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import closeness, compare, determination, runtime, sampling, zoo
from experiments.common import parser


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE", help="see zoo.py")
    args = p.parse_args(argv)
    common = ["--preset", args.preset, "--outputs", str(args.outputs)]
    zoo.main([*common, "--override", *args.override])
    for experiment in (determination, closeness, sampling, compare, runtime):
        experiment.main(common)


if __name__ == "__main__":
    main()
