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
    # pip's output is kept quiet, but a failed install stops the script with pip's full log.
    local log status=0
    log="$(mktemp)"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "$@" >"$log" 2>&1 || status=$?
    grep -v "is ignored: it is neither a file nor a directory" "$log" || true
    rm -f "$log"
    return "$status"
}
pip_install torch==2.13.0
if [ -n "$extras" ]; then
    pip_install -e ".[$extras]"
else
    pip_install -e .
fi
