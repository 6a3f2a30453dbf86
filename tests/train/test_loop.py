"""The one-process training loop: runs, exact resume, checkpoints, bad input, NaN losses."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmtrain.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from mmtrain.errors import CheckpointError, ConfigError
from mmtrain.objectives import ObjectiveOutput, masked_objective
from mmtrain.registry import OBJECTIVES
from mmtrain.train.loop import TrainingDiverged, train
from tests.helpers import tiny_config


def weights(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(checkpoint) / "model.safetensors"))


def test_one_process_run_writes_checkpoints_logs_and_summary(tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path), progress=False)
    run = tmp_path / "run"
    assert result["steps"] == 12 and result["world_size"] == 1
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == [
        "step-00000004",
        "step-00000008",
        "step-00000012",
    ]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    for key in (
        "train/loss",
        "train/R_marg",
        "train/Q_SF",
        "train/steps_per_second",
        "train/examples_per_second",
    ):
        assert key in result
    assert (run / "summary.json").is_file()
    assert any((run / "tensorboard").iterdir())


def test_resume_reaches_bitwise_identical_weights(tmp_path: Path) -> None:
    """ivae-bimodal has 16 batches per epoch: resuming at step 8 and 20 crosses an epoch."""
    straight = train(tiny_config(tmp_path / "a", "train.steps=24"), progress=False)
    train(tiny_config(tmp_path / "b", "train.steps=20"), progress=False)
    resumed = train(tiny_config(tmp_path / "b", "train.steps=24"), resume="latest", progress=False)
    a, b = weights(straight["checkpoint"]), weights(resumed["checkpoint"])
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    mid = tmp_path / "b" / "run" / "checkpoints" / "step-00000008"
    resumed_mid = train(tiny_config(tmp_path / "c", "train.steps=24"), resume=mid, progress=False)
    c = weights(resumed_mid["checkpoint"])
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_incompatible_checkpoint_says_what_differs(tmp_path: Path) -> None:
    train(tiny_config(tmp_path, "train.steps=4"), progress=False)
    other = tiny_config(tmp_path, "model.aggregator=self_attention", "model.aggregator_options={}")
    with pytest.raises(CheckpointError, match="aggregator: checkpoint 'sum_pooling' vs config"):
        train(other, resume="latest", progress=False)


def test_keep_last_prunes_old_checkpoints(tmp_path: Path) -> None:
    train(tiny_config(tmp_path, "train.keep_last=2"), progress=False)
    names = [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")]
    assert names == ["step-00000008", "step-00000012"]


def test_checkpoint_loading_never_unpickles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = train(tiny_config(tmp_path, "train.steps=4"), progress=False)
    checkpoint = Path(result["checkpoint"])

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (checkpoint / "optimizer.pkl").write_bytes(pickle.dumps(Evil()))
    (checkpoint / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle must never be used to load a checkpoint")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    import mmtrain

    model = mmtrain.load(checkpoint)
    assert sum(p.numel() for p in model.model.parameters()) > 0
    train(tiny_config(tmp_path, "train.steps=6"), resume=checkpoint, progress=False)
    assert not (tmp_path / "pwned").exists()
    # A directory holding only pickles is not a checkpoint.
    only_pickles = tmp_path / "fake" / "step-00000001"
    only_pickles.mkdir(parents=True)
    (only_pickles / "model.bin").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(CheckpointError):
        mmtrain.load(only_pickles)


def test_sigkill_during_write_leaves_previous_checkpoint_loadable(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    small = torch.nn.Linear(3, 2)
    save_checkpoint(directory, 1, small, None, {"epoch": 0})
    script = textwrap.dedent(
        f"""
        import torch
        from pathlib import Path
        from mmtrain.checkpoint import save_checkpoint
        big = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(48)])
        print("ready", flush=True)
        save_checkpoint(Path({str(directory)!r}), 2, big, None, {{"epoch": 0}})
        print("finished", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.time() + 60
    while not any(p.name.startswith(".tmp-step-00000002") for p in directory.iterdir()):
        assert time.time() < deadline and proc.poll() is None, "writer finished too fast"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    found = list_checkpoints(directory)
    assert [p.name for p in found] == ["step-00000001"]
    fresh = torch.nn.Linear(3, 2)
    load_checkpoint(found[-1], fresh)
    assert torch.equal(fresh.weight, small.weight)


def _flaky_objective(pattern: str):
    calls = {"n": 0}

    def objective(model, batch, **options) -> ObjectiveOutput:  # noqa: ANN001
        out = masked_objective(model, batch, **options)
        calls["n"] += 1
        if pattern == "always" or (pattern == "every-third" and calls["n"] % 3 == 0):
            out.loss = out.loss * float("nan")
        return out

    return objective


def test_nan_steps_are_skipped_and_counted(tmp_path: Path) -> None:
    OBJECTIVES.register("test_every_third_nan", _flaky_objective("every-third"), override=True)
    result = train(tiny_config(tmp_path, "model.objective=test_every_third_nan"), progress=False)
    assert result["steps"] == 12
    assert result["nan_skipped_steps"] >= 4


def test_consecutive_nan_steps_stop_with_last_good_checkpoint_intact(tmp_path: Path) -> None:
    good = train(tiny_config(tmp_path, "train.steps=4"), progress=False)
    before = weights(good["checkpoint"])
    OBJECTIVES.register("test_always_nan", _flaky_objective("always"), override=True)
    config = tiny_config(
        tmp_path, "model.objective=test_always_nan", "train.max_nan_steps=3", "train.steps=8"
    )
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        train(config, resume="latest", progress=False)
    after = weights(good["checkpoint"])
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")][-1] == (
        "step-00000004"
    )


def test_missing_data_path_is_a_clear_error(tmp_path: Path) -> None:
    from mmtrain.errors import DataError

    config = tiny_config(tmp_path, f"data.source={tmp_path / 'nowhere'}/*.parquet")
    with pytest.raises((DataError, ConfigError), match="nowhere"):
        train(config, progress=False)
