"""Trained models on disk (issue 15): `mmtrain.load`, `mmtrain export` and `mmtrain eval`
find the model in a bundle, a checkpoint or a run directory through one resolver, and a
truncated or foreign `model.safetensors` is a one-line `CheckpointError` naming the file
(exit 2), with nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import mmtrain
from mmtrain.bundle import export_bundle
from mmtrain.checkpoint import list_checkpoints
from mmtrain.cli import main
from mmtrain.config import load_config
from mmtrain.errors import CheckpointError
from mmtrain.evaluation.runner import load_for_eval
from mmtrain.train.loop import train

TINY = """
data: {source: ivae-bimodal, batch_size: 250}
model: {aggregator: sum_pooling, latent_dim: 2, feature_dim: 16,
        aggregator_options: {pooling_size: 16, hidden_size: 16}}
train: {steps: 8, log_every: 4, checkpoint_every: 4, keep_last: 5}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with checkpoints at steps 4 and 8 (never modified by the tests)."""
    root = tmp_path_factory.mktemp("model-files")
    (root / "tiny.yaml").write_text(TINY)
    train(load_config(root / "tiny.yaml", [f"output_dir={root / 'run'}"]), progress=False)
    return root / "run"


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run, free to damage."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def model_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def file_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


def assert_same(model: torch.nn.Module, checkpoint: Path) -> None:
    mine, saved = model_weights(model), file_weights(checkpoint)
    shared = [k for k in saved if k in mine]
    assert shared and len(shared) == len(saved)
    assert all(torch.equal(mine[k], saved[k]) for k in shared)


def test_load_accepts_a_run_directory_a_checkpoint_and_a_bundle(run: Path, tmp_path: Path) -> None:
    step4, step8 = list_checkpoints(run / "checkpoints")
    assert_same(mmtrain.load(run).model, step8)  # a run directory: its newest checkpoint
    assert_same(mmtrain.load(step4).model, step4)  # a checkpoint directory
    assert_same(mmtrain.load(run / "checkpoints").model, step8)  # a folder of checkpoints
    bundle = export_bundle(run, tmp_path / "bundle")
    assert_same(mmtrain.load(bundle).model, step8)


def test_best_checkpoint_of_a_run_is_what_load_export_and_eval_take(
    run: Path, tmp_path: Path
) -> None:
    step4 = list_checkpoints(run / "checkpoints")[0]
    shutil.copytree(step4, run / "checkpoints" / "best")
    best = run / "checkpoints" / "best"
    assert_same(mmtrain.load(run).model, best)
    bundle = export_bundle(run, tmp_path / "bundle")
    assert json.loads((bundle / "config.json").read_text())["step"] == 4
    loaded = load_for_eval(run)
    assert loaded.path == best and loaded.step == 4 and loaded.run_dir == run


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def foreign_tensors(path: Path) -> None:
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(path))


def other_model_weights(path: Path) -> None:
    """A real model.safetensors of another model: the same names, other shapes."""
    saved = load_file(str(path))
    save_file({k: torch.zeros(*(s + 1 for s in v.shape)) for k, v in saved.items()}, str(path))


DAMAGE = {"truncated": truncate, "foreign": foreign_tensors, "other-model": other_model_weights}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_corrupt_checkpoint_weights_are_one_line_errors_everywhere(
    run: Path, tmp_path: Path, damage: str, capsys
) -> None:
    newest = list_checkpoints(run / "checkpoints")[-1]
    weights = newest / "model.safetensors"
    DAMAGE[damage](weights)

    out = tmp_path / "bundle"
    for argv in (["export", str(run), str(out)], ["eval", str(run), "--out", str(tmp_path / "e")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert str(weights) in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) <= 2, err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary leftovers

    with pytest.raises(CheckpointError, match=str(weights)) as error:
        mmtrain.load(run)
    assert "\n" not in str(error.value)


def test_corrupt_bundle_weights_are_a_one_line_error(run: Path, tmp_path: Path) -> None:
    bundle = export_bundle(run, tmp_path / "bundle")
    truncate(bundle / "model.safetensors")
    with pytest.raises(CheckpointError, match=str(bundle / "model.safetensors")):
        mmtrain.load(bundle)
    (bundle / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=str(bundle / "config.json")):
        mmtrain.load(bundle)


def test_export_replaces_a_bundle_but_not_other_folders(run: Path, tmp_path: Path) -> None:
    bundle = export_bundle(run / "checkpoints" / "step-00000004", tmp_path / "bundle")
    export_bundle(run, bundle)
    assert json.loads((bundle / "config.json").read_text())["step"] == 8
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(CheckpointError, match="not an mmtrain bundle"):
        export_bundle(run, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer.safetensors", "state.json"])
def test_resume_latest_from_a_corrupt_checkpoint_names_the_previous_valid_one(
    trained: Path, run: Path, damaged: str
) -> None:
    step4, step8 = list_checkpoints(run / "checkpoints")
    truncate(step8 / damaged)
    config = load_config(trained.parent / "tiny.yaml", [f"output_dir={run}", "train.steps=12"])
    with pytest.raises(CheckpointError) as error:
        train(config, resume="latest", progress=False)
    message = str(error.value)
    assert str(step8 / damaged) in message or str(step8) in message, message
    assert f"--resume {step4}" in message, message
    assert "\n" not in message
