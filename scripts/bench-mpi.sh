#!/usr/bin/env bash
# Data-parallel throughput on this machine (docs/distributed.md): the lstm and cae workloads at
# one rank (1 and all BLAS threads) and at 2 ranks (cores/2 BLAS threads each), same global
# batch. Needs a build with MPI (default ./build-mpi) and Fashion-MNIST. Prints a table.
#   scripts/bench-mpi.sh [STEPS] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${PLEXUS_MPI_BUILDDIR:-build-mpi}
steps=${1:-60}
repeats=${2:-3}
cores=$(nproc)
exe="$PWD/$build/core/plexus"
export PLEXUS_PLUGIN_PATH
PLEXUS_PLUGIN_PATH=$(ls -d "$PWD/$build"/plugins/*/ | tr '\n' ':')
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
out=$(mktemp -d /tmp/px-bench-mpi-XXXXXX)
sets=(--set "train.steps_per_epoch=$steps" --set train.epochs=1 --set data.test.limit=64
      --set train.checkpoint.keep=1)

# items/s of the training steps (metrics.csv) and rank 0's communication line
run() {  # name ranks threads pipeline
  local name=$1 np=$2 th=$3 pipe=$4 dir="$out/$1"
  for k in $(seq "$repeats"); do
    rm -rf "$dir"
    if [ "$np" -eq 1 ]; then
      OPENBLAS_NUM_THREADS=$th "$exe" train "$pipe" --run-dir "$dir" "${sets[@]}" \
        --set "train.threads=$th" 2>"$dir.err" >/dev/null
    else
      OPENBLAS_NUM_THREADS=$th mpirun -np "$np" --bind-to none "$exe" train "$pipe" \
        --run-dir "$dir" "${sets[@]}" 2>"$dir.err" >/dev/null
    fi
    ips=$(tail -1 "$dir/metrics.csv" | awk -F, '{print $NF}')
    comm=$(grep -o 'communication.*' "$dir.err" || echo "-")
    printf '%-6s ranks %d x %d threads  %8.1f items/s  %s\n' "$name" "$np" "$th" "$ips" "$comm"
  done
}
for w in lstm:pipelines/fashion-rows-lstm.yaml cae:pipelines/fashion-cae.yaml; do
  name=${w%%:*} pipe=${w#*:}
  run "$name" 1 1 "$pipe"
  run "$name" 1 "$cores" "$pipe"
  run "$name" 2 $((cores / 2 > 0 ? cores / 2 : 1)) "$pipe"
done
rm -rf "$out"
