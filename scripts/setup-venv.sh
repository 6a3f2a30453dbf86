#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install mmtrain into it.
# Usage: scripts/setup-venv.sh [EXTRAS]   e.g. scripts/setup-venv.sh kernels,dev
# torch==2.13.0 goes in first: it is the CPU build this machine keeps on disk; any other torch
# requirement would pull gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MMTRAIN_VENV:-.venv}"
extras="${1:-}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
pip_install() {
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "$@" 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true
    return "${PIPESTATUS[0]}"
}
pip_install torch==2.13.0
if [ -n "$extras" ]; then
    pip_install -e ".[$extras]"
else
    pip_install -e .
fi
