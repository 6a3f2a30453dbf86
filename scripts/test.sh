#!/usr/bin/env bash
# The test suite: install mmtrain with its test, kernel and distributed extras into .venv, then run pytest
# offline, with Triton in its interpreter (no GPU needed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh kernels,distributed,dev
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRITON_INTERPRET=1
export RAY_AUTH_MODE=disabled RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/python -m pytest -q -n 2 --durations=15 "$@"
