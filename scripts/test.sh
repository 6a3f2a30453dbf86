#!/usr/bin/env bash
# The test suite: install mmtrain with its test, kernel, distributed and tracker extras into
# .venv, compile every Triton kernel for real GPU targets (no GPU needed), then run pytest
# offline, with Triton in its interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh kernels,distributed,dev,trackers
# Lint and format first: a style error fails in seconds, not after the suite.
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
# Ahead-of-time kernel check: every Triton kernel variant the launchers can choose, compiled for
# sm_80 and sm_90 without a GPU, one line each (registers, shared memory, spills, occupancy);
# fails on a compile error, a spill or too much shared memory. MMTRAIN_SKIP_AOT=1 skips it.
if [ "${MMTRAIN_SKIP_AOT:-0}" != 1 ]; then
    env -u TRITON_INTERPRET .venv/bin/python benchmarks/aot_kernels.py
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRITON_INTERPRET=1
export RAY_AUTH_MODE=disabled RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/python -m pytest -q -n 2 --durations=15 "$@"
