"""`accelerate launch -m mmtrain train CONFIG` runs the one loop in two CPU processes.

ENVIRONMENT.md's trap: `accelerate launch --cpu --num_processes 2` silently runs one
process. Two CPU processes need `--multi_gpu` with `ACCELERATE_USE_CPU=true`, so the test
asserts the world size the loop saw instead of trusting the flags.

"Parameters identical across ranks": only rank 0 writes checkpoints, so a checkpoint cannot
show rank 1's weights. The `accelerate_run` fixture therefore launches `python -m mmtrain`
through a small probe (conftest.PARAMETER_PROBE) that keeps the prepared model and, after
the CLI returns, all-gathers every rank's parameters over the open gloo process group. The
test compares them bitwise, with each other and with rank 0's final checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(accelerate_run: Path, tools: SimpleNamespace) -> None:
    run = accelerate_run / "run"
    output = (accelerate_run / "launch.log").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2, output[-2000:]
    assert summary["steps"] == tools.reference_steps
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(4, tools.reference_steps + 1, 4))
    # Every rank returns from the loop; only the main process prints the summary and logs
    # to the trackers (one TensorBoard event file of scalars).
    assert output.count("training summary") == 1, output[-3000:]
    assert len(list((run / "tensorboard" / "run").glob("events.out.tfevents.*"))) == 1

    saved = json.loads((accelerate_run / "params.safetensors.json").read_text())
    ranks = load_file(str(accelerate_run / "params.safetensors"))
    assert saved["world"] == 2
    rank0, rank1 = ranks["rank0"], ranks["rank1"]
    assert torch.equal(rank0, rank1), f"max |Δ| = {float((rank0 - rank1).abs().max())}"

    # What the ranks hold is what rank 0 checkpointed last, and training moved it.
    final = load_file(str(Path(summary["checkpoint"]) / "model.safetensors"))
    first = load_file(str(run / "checkpoints" / "step-00000032" / "model.safetensors"))
    offset, moved = 0, 0.0
    for name in saved["names"]:
        size = final[name].numel()
        assert torch.equal(rank0[offset : offset + size].view_as(final[name]), final[name]), name
        moved = max(moved, float((final[name] - first[name]).abs().max()))
        offset += size
    assert offset == rank0.numel()
    assert moved > 0
