#!/bin/bash
# Two processes of one thread against one process of two threads (README, "More than one
# machine"): one epoch of each experiment per configuration, alternating, two rounds; prints
# each run's training and evaluation images/s from its summary.json.
# Usage: KILN=path/to/kiln (built with --features mpi) CIFAR=DIR (the JPEG copy of CIFAR-10
# as train/ and test/ folders) MNIST=DIR experiments/results/data-parallel/measure.sh
set -euo pipefail
KILN=${KILN:-target/release/kiln}
OUT=${OUT:-runs/data-parallel-measure}
rm -rf "$OUT"; mkdir -p "$OUT"
run() { # name procs threads kiln-run-arguments...
  local name=$1 procs=$2 threads=$3; shift 3
  local dir=$OUT/$name-p$procs-t$threads-$ROUND
  "$KILN" --quiet launch --procs "$procs" --threads "$threads" -- "$@" --run-folder "$dir" \
    > /dev/null 2> "$dir.err"
  python3 -c "import json;s=json.load(open('$dir/summary.json'));print('$name procs=$procs threads=$threads round=$ROUND train_img_s=%.1f eval_img_s=%.1f total_s=%.1f' % (s['train_images_per_sec'], s['eval_images_per_sec'], s['total_seconds']))"
}
for ROUND in 1 2; do
  for cfg in "1 2" "2 1"; do
    set -- $cfg
    run lenet5 "$1" "$2" lenet5-fashion-mnist --epochs 1 --offline
    run convnet "$1" "$2" convnet-mnist --epochs 1 --limit-train 20000 --data-dir "$MNIST" --offline
    run resnet "$1" "$2" resnet-cifar10 --epochs 1 --limit-train 1280 --limit-test 400 \
      --layout folder --data-dir "$CIFAR" --offline
  done
done
