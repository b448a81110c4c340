#!/usr/bin/env bash
# The reduced CIFAR-10 zoo of the benchmark (preset cifar10_device) in one call on a GPU
# machine, sized to finish in under 8 minutes on one H200: 1 parent (ResNet-18, 4 epochs),
# finetune, pruning, distill and quantize at ratios 0.3 and 0.7, 2 independent models and
# 4 references (the fewest the p-value verdict takes), then all five experiments, each
# printing its table.
#
# On a machine without the Hydra packages, put their wheels in .whl/ (hydra-core, omegaconf,
# antlr4-python3-runtime). The CIFAR-10 data is read from $LINEAGE_DATA/cifar-10-batches-py;
# when it is missing it is made from .data/cifar10-jpeg.tar.xz with .data/make_cifar10.py
# (copies of ../shared/data). Extra arguments are Hydra overrides for the zoo; a 3-minute
# CPU smoke run:
#   PY=.venv/bin/python bash scripts/device_cifar10.sh data.limit=1000 model.width=0.125 \
#       data.epochs=1 determination.probe_points=200 closeness.max_points=100 closeness.min_points=50
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if [ -d .whl ] && ! "$PY" -c "import hydra, omegaconf" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export LINEAGE_DATA=${LINEAGE_DATA:-/tmp/lineage-data}
if [ ! -d "$LINEAGE_DATA/cifar-10-batches-py" ]; then
    echo "making CIFAR-10 under $LINEAGE_DATA" >&2
    "$PY" .data/make_cifar10.py "$LINEAGE_DATA"  # reads the archive beside it
fi
export WANDB_MODE=${WANDB_MODE:-disabled} PYTHONUNBUFFERED=1
time "$PY" -m experiments.run_all --preset cifar10_device --override "$@"
if [ -n "${OUT:-}" ]; then  # the device tool brings back at most 8 flat files
    d=outputs/experiments/cifar10_device
    for f in zoo determination/summary determination/misjudged closeness/spearman \
        compare/methods compare/verdict_vs runtime/runtime; do
        cp "$d/$f.md" "$OUT/$(echo "$f" | tr / _).md"
    done
fi
