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
