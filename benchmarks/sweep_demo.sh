#!/usr/bin/env bash
# The `mmtrain sweep` demos of docs/results/sweep.md on a two-raylet Ray cluster started on
# this machine (and stopped afterwards): a 2 aggregators × 2 seeds grid with one trial's
# worker SIGKILLed, then the same grid with the driver SIGKILLed and `--resume`d.
# Usage: benchmarks/sweep_demo.sh [--steps N] [--out DIR] [--doc docs/results/sweep.md]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/python benchmarks/sweep_demo.py "$@"
