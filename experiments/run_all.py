"""The zoo and all five experiments of the paper, in order, for one preset.

    python -m experiments.run_all --preset digits_mlp     # minutes
    python -m experiments.run_all --preset mnist_lenet    # < 60 min on a 2-core CPU
    python -m experiments.run_all --preset mnist_lenet --jobs 2   # both cores at once
    bash scripts/device_cifar10.sh                        # the reduced CIFAR-10 zoo, one GPU

Equivalent to running experiments/zoo.py, then determination.py, closeness.py, sampling.py,
compare.py and runtime.py with the same --preset; every table and figure lands under
outputs/experiments/<preset>/. Rerunning resumes: cached models and judged pairs are reused.
"""

from __future__ import annotations

from experiments import closeness, compare, determination, runtime, sampling, zoo
from experiments.common import parser


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE", help="see zoo.py")
    zoo.add_job_options(p)
    args = p.parse_args(argv)
    common = ["--preset", args.preset, "--outputs", str(args.outputs)]
    jobs = ["--jobs", str(args.jobs), *(["--threads", str(args.threads)] if args.threads else [])]
    zoo.main([*common, *jobs, "--override", *args.override])
    for experiment in (determination, closeness, sampling, compare, runtime):
        experiment.main(common)


if __name__ == "__main__":
    main()
