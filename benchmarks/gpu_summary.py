"""The markdown summary of one `benchmarks/gpu_check.sh` run: the GPU, the kernel tests, the
kernel timings against PyTorch and the training step.

    python benchmarks/gpu_summary.py OUT_DIR > OUT_DIR/gpu_check.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def markdown(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (pandas' own needs `tabulate`)."""
    header = [str(column) for column in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for values in frame.itertuples(index=False):
        cells = ["" if pd.isna(value) else str(value) for value in values]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _last_line(path: Path) -> str:
    if not path.exists():
        return f"({path.name} missing)"
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(empty)"


def kernel_table(path: Path) -> str:
    """Median ms per provider for each op, dtype, mode and shape, and the Triton kernel's
    speed-up over eager PyTorch and over `torch.compile` of the same reference."""
    if not path.exists():
        return "(no kernel timings)"
    rows = pd.read_csv(path)
    failed = rows[rows["median_ms"].isna()]
    timed = rows.dropna(subset=["median_ms"])
    if timed.empty:
        return "(no kernel timings)"
    table = timed.pivot_table(
        index=["op", "dtype", "mode", "shape"], columns="provider", values="median_ms"
    )
    for baseline in ("torch", "torch_compile"):
        if baseline in table and "triton" in table:
            table[f"speed-up vs {baseline}"] = table[baseline] / table["triton"]
    text = markdown(table.round(4).reset_index())
    if not failed.empty:
        notes = failed[["op", "dtype", "shape", "provider", "mode", "note"]]
        text += "\n\nRows without a timing:\n\n" + markdown(notes)
    return text


def main(out: Path) -> None:
    gpu = (out / "gpu.txt").read_text() if (out / "gpu.txt").exists() else "(unknown)"
    print("# GPU check\n")
    print("```text\n" + gpu.strip() + "\n```\n")
    print("## Kernel tests against the PyTorch references (real Triton, not the interpreter)\n")
    print("`pytest tests/kernels` on the GPU: " + _last_line(out / "kernel_tests.log") + "\n")
    print("## Kernels: median ms (`triton.testing.do_bench`)\n")
    print(kernel_table(out / "kernels.csv") + "\n")
    print("## Training step (configs/quickstart.yaml)\n")
    step = out / "train_step.csv"
    if step.exists():
        print(markdown(pd.read_csv(step).drop(columns=["gpu"])))
    else:
        print("(no training-step rows)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
