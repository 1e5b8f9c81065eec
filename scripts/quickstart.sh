#!/usr/bin/env bash
# The main job: set up, build, and train pipelines/quickstart.yaml end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PLEXUS_PLUGIN_PATH="$PWD/build/plugins/rnn:$PWD/build/plugins/lstm:$PWD/build/plugins/gru:$PWD/build/plugins/attention:$PWD/build/plugins/autoencoder:$PWD/build/plugins/conv"
./build/core/plexus train pipelines/quickstart.yaml --run-dir runs/quickstart
echo "quickstart: results in $PWD/runs/quickstart (model.safetensors, metrics.csv, pipeline.yaml)"
