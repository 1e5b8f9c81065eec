#!/usr/bin/env bash
# The autoencoder workloads of ../shared/bench/torch_anchor.py ("dae 784-256-64 B128 train",
# "cae 28x28 B64 train") trained by the plexus command itself: bench/dae-anchor.yaml and
# bench/cae-anchor.yaml, 20 warm-up steps, then 20 timed steps (epoch 2 of metrics.csv).
# Prints one line per workload like the anchor: name, ms/step, items/s.
#   bash bench/bench-autoencoders.sh [THREADS]     (default 2; needs dataset-fashion-mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
build=${PLEXUS_BUILD:-build}
plugins=$(ls -d "$PWD/$build"/plugins/*/ | tr '\n' ':')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for w in "dae 784-256-64 B128 train:dae-anchor:128" "cae 28x28 B64 train:cae-anchor:64"; do
  IFS=: read -r name file batch <<<"$w"
  OPENBLAS_NUM_THREADS=$threads PLEXUS_PLUGIN_PATH=$plugins PLEXUS_PLUGINSDIR='' \
    "$build/core/plexus" train "bench/$file.yaml" --run-dir "$tmp/$file" \
    --set "train.threads=$threads" >/dev/null 2>&1
  # metrics.csv: epoch,step,train_loss,...,seconds,items_per_s
  awk -F, -v n="$name" -v b="$batch" 'NR == 3 {
      printf "%s\t%.2f ms/step\t%.0f items/s\n", n, 1000 * b / $NF, $NF }' "$tmp/$file/metrics.csv"
done
