#!/usr/bin/env bash
# The main job: install mmtrain into .venv and train a model on the embedded default data,
# ending in a readable report (a few minutes on a 2-core CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
out="${MMTRAIN_OUT:-runs/main}"
mkdir -p "$out"
.venv/bin/mmtrain experiment linear-gaussian --modalities 2 --aggregator sum_pooling \
    --objective masked --steps "${MMTRAIN_STEPS:-1500}" --lr 3e-3 --is-samples 100 \
    --json "$out/linear-gaussian.json"
