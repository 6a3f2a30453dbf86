"""Folders written by `datasets`' `save_to_disk` (a `Dataset`, or a `DatasetDict` with one
folder per split) stream through the same path as every other source: sharded by node,
split picked from a `DatasetDict`, and `mmtrain data inspect` reads them too."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from mmtrain.cli import main
from mmtrain.config import load_config
from mmtrain.data import build_loader
from mmtrain.errors import DataError
from mmtrain.train.loop import train
from tests.data.helpers import config_for, make_rows

ROWS = 600


def scaled_rows(n: int, start: int = 0) -> dict[str, list]:
    """`make_rows` with the cells divided by 1000: ids stay the labels, and the few training
    steps below see inputs of order 1 (raw ids up to 1199 overflow exp(log-scale) at once)."""
    rows = make_rows(n, start)
    for column in ("a", "b"):
        rows[column] = [[v / 1000 for v in cell] for cell in rows[column]]
    return rows


def saved_dataset(root: Path, rows: int = ROWS, shards: int = 3) -> Path:
    """A `Dataset` saved in `shards` Arrow files (with dataset_info.json and state.json)."""
    datasets.Dataset.from_dict(scaled_rows(rows)).save_to_disk(str(root), num_shards=shards)
    return root


def saved_dataset_dict(root: Path) -> Path:
    """A `DatasetDict`: train holds ids 0..599, test ids 1000..1199."""
    parts = {
        "train": datasets.Dataset.from_dict(scaled_rows(ROWS)),
        "test": datasets.Dataset.from_dict(scaled_rows(200, start=1000)),
    }
    datasets.DatasetDict(parts).save_to_disk(str(root), num_shards={"train": 2, "test": 1})
    return root


@pytest.fixture
def saved(tmp_path: Path) -> dict[str, Path]:
    return {
        "dataset": saved_dataset(tmp_path / "ds"),
        "dataset_dict": saved_dataset_dict(tmp_path / "dd"),
    }


def ids_of(loader) -> list[int]:
    return [i for batch in loader for i in batch.labels.tolist()]


@pytest.mark.parametrize("form", ["dataset", "dataset_dict"])
@pytest.mark.parametrize("world", [2, 3])
def test_every_example_once_across_ranks_and_workers(saved, form: str, world: int) -> None:
    config = config_for(saved[form], num_workers=2, persistent_workers=False)
    for epoch in (0, 1):
        per_rank = []
        for rank in range(world):
            loader = build_loader(config, rank=rank, world_size=world)
            loader.set_epoch(epoch)
            per_rank.append(ids_of(loader))
        seen = [i for ids in per_rank for i in ids]
        assert sorted(seen) == list(range(ROWS))
        assert min(len(ids) for ids in per_rank) > ROWS // world // 2


def test_the_split_is_picked_from_a_dataset_dict(saved) -> None:
    test_ids = ids_of(build_loader(config_for(saved["dataset_dict"], split="test")))
    assert sorted(test_ids) == list(range(1000, 1200))
    with pytest.raises(DataError, match="no split 'validation'.*test, train"):
        build_loader(config_for(saved["dataset_dict"], split="validation"))
    with pytest.raises(DataError, match="no split 'test'"):
        build_loader(config_for(saved["dataset"], split="test"))


TRAIN = """
data:
  source: {source}
  batch_size: 50
  label_columns: [id]
  modalities:
    a: {{kind: vector, options: {{shape: [2], encoder_hidden: [8], decoder_hidden: [8]}}}}
    b: {{kind: vector, options: {{shape: [3], encoder_hidden: [8], decoder_hidden: [8]}}}}
model: {{aggregator: sum_pooling, latent_dim: 2, feature_dim: 8,
        aggregator_options: {{pooling_size: 8, hidden_size: 8}}}}
train: {{steps: 4, log_every: 2, eval_every: 2, eval_batches: 1, eval_split: {eval_split}}}
output_dir: {output}
"""


@pytest.mark.parametrize("form", ["dataset", "dataset_dict"])
def test_both_forms_train_and_inspect(saved, tmp_path: Path, form: str, capsys) -> None:
    eval_split = "test" if form == "dataset_dict" else "null"
    path = tmp_path / f"{form}.yaml"
    path.write_text(
        TRAIN.format(source=saved[form], eval_split=eval_split, output=tmp_path / f"run-{form}")
    )
    result = train(load_config(path), progress=False)
    assert result["steps"] == 4 and result["data/examples"] > 0
    if form == "dataset_dict":
        assert result["eval/examples"] == 50  # one batch of the test split

    assert main(["data", "inspect", str(saved[form]), "--rows", "100"]) == 0
    report = capsys.readouterr().out
    assert "rows:    600" in report
    assert "a: list<float64>" in report and "id: int64" in report
    assert "present (first 100 rows):" in report


def test_saved_dataset_rows_are_counted_for_epochs(saved, tmp_path: Path) -> None:
    path = tmp_path / "epochs.yaml"
    path.write_text(
        TRAIN.format(source=saved["dataset"], eval_split="null", output=tmp_path / "run") + "\n"
    )
    config = load_config(path, ["train.steps=null", "train.epochs=1", "train.eval_every=0"])
    result = train(config, progress=False)
    assert result["steps"] == ROWS // 50  # the epoch's length comes from the saved rows


def test_a_bad_cell_is_named_by_arrow_file_and_row(tmp_path: Path) -> None:
    rows = make_rows(ROWS)
    rows["a"][350] = [1.0]  # the second of three files holds rows 200..399
    root = tmp_path / "bad"
    datasets.Dataset.from_dict(rows).save_to_disk(str(root), num_shards=3)
    with pytest.raises(DataError, match=r"data-00001-of-00003\.arrow, row 150, column 'a'"):
        ids_of(build_loader(config_for(root, shuffle=False)))
