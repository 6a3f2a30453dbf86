"""The prepared GPU check runs its dry run on a machine without a GPU (as CI does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_prints_the_plan_and_checks_its_arguments() -> None:
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kernel benchmark grid" in done.stdout
    assert done.stdout.strip().endswith("scripts parse and import")


def test_gpu_summary_tables_are_markdown() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pandas as pd
    from gpu_summary import markdown

    frame = pd.DataFrame({"op": ["attention", "mixture"], "ms": [0.25, None]})
    assert markdown(frame).splitlines() == [
        "| op | ms |",
        "| --- | --- |",
        "| attention | 0.25 |",
        "| mixture |  |",
    ]


def test_matmul_recorder_counts_a_linear_layers_products_and_flops() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from bench_matmul_floor import MatmulRecorder

    layer = torch.nn.Linear(7, 3)
    x = torch.randn(5, 7, requires_grad=True)
    recorder = MatmulRecorder()
    with recorder:
        layer(x).sum().backward()
    # forward addmm [5,7]x[7,3]; backward: grad x = [5,3]x[3,7], grad W = [3,5]x[5,7]
    assert sum(recorder.calls.values()) == 3
    assert sum(n * call.flops() for call, n in recorder.calls.items()) == 3 * 2 * 5 * 7 * 3
    assert all(call.replay_cpu_seconds(2) >= 0 for call in recorder.calls)
