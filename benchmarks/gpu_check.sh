#!/usr/bin/env bash
# One prepared GPU check, for a machine with a CUDA GPU and no network:
#   bash benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]      (OUT_DIR default: runs/gpu_check)
# 1. install mmtrain without dependencies (the machine's torch, Triton, pandas...; wheels of
#    anything else it lacks may wait in .whl/), and record the GPU, driver and versions;
# 2. the kernel tests on the GPU with the real Triton compiler: every kernel against its
#    PyTorch reference, fp32 and bf16/fp16 by flash-attention's rule (error ≤ 2× PyTorch's own);
# 3. the kernel benchmark grid (B ∈ {16k, 64k}, M ∈ {2, 5, 16}, Dh ∈ {32, 64}) against eager
#    PyTorch, torch.compile of the reference and SDPA, within a time budget;
# 4. a training step of configs/quickstart.yaml: eager vs torch.compile, fp32 vs bf16 (ms/step,
#    peak memory, MFU), and the training loop's own steps/s;
# 5. with two or more GPUs, a 2-process `accelerate launch` run;
# then OUT_DIR/gpu_check.md summarises it, naming the GPU. Each step has its own time limit,
# and one that fails is recorded, not fatal. About 6 minutes on one H100/H200.
# --dry-run (CI, no GPU) prints this plan and checks that the scripts parse and import.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
if [ "${1:-}" = "--dry-run" ]; then
    dry=1
    shift
fi
out="${1:-runs/gpu_check}"
python="${PYTHON:-python3}"
scripts=(benchmarks/bench_kernels.py benchmarks/gpu_train_step.py benchmarks/gpu_summary.py)
attention_args=(--ops attention --dtypes bf16,fp32 --modes fwd,full --batch 16384,65536
    --set-sizes 2,5,16 --head-dims 32,64 --heads 1 --time-budget-s 70)
mixture_args=(--ops mixture --dtypes fp32 --modes fwd,full --batch 16384,65536
    --set-sizes 2,5,16 --head-dims 32,64 --heads 4 --time-budget-s 25)
train_args=(configs/quickstart.yaml --steps 100 --loop-steps 300)

if [ "$dry" = 1 ]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    "$python" -m py_compile "${scripts[@]}" || exit 1
    # The exact arguments of the run below go through each script's own parser.
    for args in "${attention_args[*]}" "${mixture_args[*]}"; do
        # shellcheck disable=SC2086
        "$python" -c "import sys; sys.path.insert(0, 'benchmarks'); import bench_kernels; bench_kernels.parse_args(sys.argv[1:])" $args || exit 1
    done
    "$python" -c "import sys; sys.path.insert(0, 'benchmarks'); import gpu_train_step; gpu_train_step.parse_args(sys.argv[1:])" "${train_args[@]}" || exit 1
    "$python" -c "import pandas, torch, mmtrain.kernels, mmtrain.factory, mmtrain.train" \
        || exit 1
    echo "gpu_check --dry-run: plan printed, scripts parse and import"
    exit 0
fi

mkdir -p "$out"
status="$out/gpu.txt"
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, record the exit status
    local name="$1" limit="$2"
    shift 2
    local started=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "step $name: exit $rc after $((SECONDS - started)) s" | tee -a "$status"
}

if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-check-site .whl/*.whl
    export PYTHONPATH="/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$python" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
    || "$python" -m pip install -q --no-index --no-deps --no-build-isolation . || exit 1
{
    date -u +"%Y-%m-%d %H:%M UTC"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$python" -c "import torch, triton; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'triton', triton.__version__)"
    echo "CPU cores: $(nproc)"
} >"$status" 2>&1
unset TRITON_INTERPRET
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MMTRAIN_HOME="${MMTRAIN_HOME:-/tmp/mmtrain-home}"

step kernel_tests 120 "$python" -m pytest tests/kernels -q -p no:cacheprovider -n 8 \
    --ignore=tests/kernels/test_aot_kernels.py
step bench_attention 100 "$python" benchmarks/bench_kernels.py --out "$out/kernels.csv" \
    "${attention_args[@]}"
step bench_mixture 45 "$python" benchmarks/bench_kernels.py --out "$out/kernels.csv" \
    "${mixture_args[@]}"
step train_step 170 "$python" benchmarks/gpu_train_step.py "${train_args[@]}" \
    --out "$out/train_step.csv"
gpus=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
if [ "$gpus" -ge 2 ]; then
    step accelerate_2gpu 150 accelerate launch --multi_gpu --num_processes 2 -m mmtrain train \
        configs/quickstart.yaml --set output_dir=/tmp/gpu-check-accelerate --set train.steps=200 \
        --overwrite --quiet
else
    echo "step accelerate_2gpu: skipped, $gpus GPU" | tee -a "$status"
fi
"$python" benchmarks/gpu_summary.py "$out" >"$out/gpu_check.md" 2>>"$status"
cat "$out/gpu_check.md"
