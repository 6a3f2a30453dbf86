"""`train.compile`: compiled training steps give the eager steps' losses and weights.

Every aggregator × objective runs under the `aot_eager` backend (Dynamo traces the model and
objective, AOTAutograd the backward, with no generated code), which catches graph breaks
and tracing errors cheaply; one cell runs under Inductor, the code-generating default, whose
C++ compilation takes tens of CPU seconds per graph on these machines. Dynamo's counters
bound the recompilations: a compiled step must not be recompiled every step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch._dynamo
from safetensors.torch import load_file
from torch._dynamo.utils import counters

from mmtrain.errors import ConfigError
from mmtrain.registry import AGGREGATORS
from mmtrain.train.loop import train
from tests.helpers import tiny_config

STEPS = 5


def _options(aggregator: str) -> str:
    if aggregator.startswith("sum_pooling"):
        return "model.aggregator_options={pooling_size: 32, hidden_size: 32}"
    return "model.aggregator_options={}"


def _run(tmp_path: Path, aggregator: str, objective: str, *extra: str) -> tuple[list, dict]:
    overrides = [
        f"train.steps={STEPS}",
        "train.log_every=1",
        "train.checkpoint_every=0",
        f"model.aggregator={aggregator}",
        f"model.objective={objective}",
        _options(aggregator),
        "data.batch_size=32",
        # β changes every step: a Python float that must not recompile the step each time.
        "model.beta_schedule={kind: linear, warmup_steps: 5, start: 0.1}",
        *extra,
    ]
    result = train(tiny_config(tmp_path, *overrides), progress=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["train/loss"] for line in lines]
    weights = load_file(str(Path(result["checkpoint"]) / "model.safetensors"))
    return losses, weights


def _assert_same_run(eager: tuple[list, dict], compiled: tuple[list, dict], rtol: float) -> None:
    eager_losses, eager_weights = eager
    compiled_losses, compiled_weights = compiled
    assert len(eager_losses) == len(compiled_losses) == STEPS
    assert compiled_losses == pytest.approx(eager_losses, rel=rtol)
    # Keys without `_orig_mod.`: checkpoints save the model, never the compiled wrapper.
    assert compiled_weights.keys() == eager_weights.keys()
    for name, tensor in eager_weights.items():
        torch.testing.assert_close(compiled_weights[name], tensor, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("objective", ["masked", "mixture"])
@pytest.mark.parametrize("aggregator", AGGREGATORS.names())
def test_aot_eager_steps_equal_eager_steps(tmp_path: Path, aggregator: str, objective: str) -> None:
    eager = _run(tmp_path / "eager", aggregator, objective)
    torch._dynamo.reset()
    counters.clear()
    compiled = _run(
        tmp_path / "compiled",
        aggregator,
        objective,
        "train.compile=true",
        "train.compile_backend=aot_eager",
    )
    _assert_same_run(eager, compiled, rtol=1e-5)
    # A handful of graphs (one per graph-break segment, perhaps one recompile after the
    # first step), not a fresh compilation every step.
    assert 1 <= counters["stats"]["unique_graphs"] < STEPS


_INDUCTOR_RUN = """
import json, sys
from pathlib import Path
import torch, torch._dynamo
from torch._dynamo.utils import counters
from tests.train.test_compile import _run
tmp = Path(sys.argv[1])
eager = _run(tmp / "eager", "sum_pooling", "masked")
torch._dynamo.reset()
counters.clear()
# Inductor draws its own random numbers unless told to fall back to eager's generator;
# with it, the reparameterisation and subset draws match eager exactly.
with torch._inductor.config.patch(fallback_random=True):
    compiled = _run(tmp / "compiled", "sum_pooling", "masked", "train.compile=true")
from safetensors.torch import save_file
for name, (losses, weights) in (("eager", eager), ("compiled", compiled)):
    save_file(weights, str(tmp / f"{name}.safetensors"))
    (tmp / f"{name}.json").write_text(json.dumps(losses))
print(json.dumps({"graphs": int(counters["stats"]["unique_graphs"])}))
"""


def test_inductor_steps_equal_eager_steps(tmp_path: Path) -> None:
    # A fresh interpreter: Inductor's C++ build imports setuptools, whose distutils shim
    # asserts when another test in this worker has imported the standard library's
    # distutils first.
    done = subprocess.run(
        [sys.executable, "-c", _INDUCTOR_RUN, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    eager, compiled = (
        (
            json.loads((tmp_path / f"{name}.json").read_text()),
            load_file(str(tmp_path / f"{name}.safetensors")),
        )
        for name in ("eager", "compiled")
    )
    _assert_same_run(eager, compiled, rtol=1e-4)
    graphs = json.loads(done.stdout.strip().splitlines()[-1])["graphs"]
    assert 1 <= graphs < STEPS


def test_compile_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no effect without train.compile"):
        tiny_config(tmp_path, "train.compile_mode=max-autotune")
    with pytest.raises(ConfigError, match="unknown train.compile_backend 'nope'"):
        tiny_config(tmp_path, "train.compile=true", "train.compile_backend=nope")
    with pytest.raises(ConfigError, match="Inductor option"):
        tiny_config(
            tmp_path,
            "train.compile=true",
            "train.compile_backend=aot_eager",
            "train.compile_mode=default",
        )
