"""Source resolution: Hub names fail fast offline, local directories by split, globs,
formats, config validation."""

from __future__ import annotations

import time

import pytest

from mmtrain.data import DataConfig, build_loader, resolve_source
from mmtrain.data.sources import hub_offline_reason
from mmtrain.errors import ConfigError, DataError
from tests.data.helpers import config_for, make_rows, write_parquet


def test_hub_name_offline_fails_within_seconds_and_says_how_to_fix():
    start = time.perf_counter()
    with pytest.raises(DataError) as caught:
        build_loader(config_for("someone/some-dataset"))
    assert time.perf_counter() - start < 5
    message = str(caught.value)
    assert "no network" in message and "HF_HUB_OFFLINE" in message
    assert "local files" in message and "parquet" in message


def test_unreachable_hub_endpoint_is_detected_quickly(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    reason = hub_offline_reason(timeout=2.0)
    assert time.perf_counter() - start < 3
    assert reason is not None and "127.0.0.1:9" in reason


def test_directory_splits_follow_file_names(tmp_path):
    for split, start in (("train", 0), ("test", 100), ("validation", 200)):
        write_parquet(tmp_path / f"{split}-00000-of-00001.parquet", make_rows(10, start))
    write_parquet(tmp_path / "_hidden" / "train-x.parquet", make_rows(5, 500))
    for split, start in (("train", 0), ("test", 100), ("validation", 200), ("val", 200)):
        source = resolve_source(DataConfig(str(tmp_path), split=split))
        assert source.kind == "local" and source.format == "parquet"
        assert len(source.files) == 1
        batch = next(iter(build_loader(config_for(tmp_path, split=split, shuffle=False))))
        assert batch.labels[0].item() == start
    with pytest.raises(DataError, match="no files of split 'other'.*test, train, validation"):
        resolve_source(DataConfig(str(tmp_path), split="other"))


def test_directory_without_split_names_is_train(tmp_path):
    write_parquet(tmp_path / "part-a.parquet", make_rows(4))
    write_parquet(tmp_path / "sub" / "part-b.parquet", make_rows(4, 4))
    assert len(resolve_source(DataConfig(str(tmp_path))).files) == 2
    with pytest.raises(DataError, match="no split 'test'"):
        resolve_source(DataConfig(str(tmp_path), split="test"))


def test_globs_files_and_formats(tmp_path):
    write_parquet(tmp_path / "a.parquet", make_rows(4))
    write_parquet(tmp_path / "b.parquet", make_rows(4, 4))
    (tmp_path / "c.jsonl").write_text('{"id": 1}\n')
    assert len(resolve_source(DataConfig(str(tmp_path / "*.parquet"))).files) == 2
    assert resolve_source(DataConfig(str(tmp_path / "c.jsonl"))).format == "json"
    with pytest.raises(DataError, match="cannot tell the format"):
        resolve_source(DataConfig(str(tmp_path)))
    with pytest.raises(DataError, match="no files match"):
        resolve_source(DataConfig(str(tmp_path / "*.arrow")))


def test_config_is_validated_with_helpful_messages(tmp_path):
    with pytest.raises(
        ConfigError, match="unknown key 'data.batchsize'; did you mean 'data.batch_size'"
    ):
        DataConfig.from_dict({"source": "digits", "batchsize": 3})
    with pytest.raises(ConfigError, match="on_bad_row"):
        DataConfig("digits", on_bad_row="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs 'kind'"):
        DataConfig("digits", modalities={"a": {"column": "a"}})
    with pytest.raises(ConfigError, match="same column twice"):
        DataConfig(
            "x", modalities={"a": {"kind": "vector"}, "b": {"column": "a", "kind": "vector"}}
        )
    write_parquet(tmp_path / "a.parquet", make_rows(4))
    with pytest.raises(ConfigError, match="embedded datasets only"):
        resolve_source(DataConfig(str(tmp_path), missing_rate=0.2))
    with pytest.raises(ConfigError, match="data.modalities is empty"):
        build_loader(DataConfig(str(tmp_path)))
    config = config_for(tmp_path, label_columns=["id"], on_bad_row="skip")
    assert DataConfig.from_dict(config.to_dict()) == config


def test_unknown_modality_kind_lists_the_known_ones(tmp_path):
    write_parquet(tmp_path / "a.parquet", make_rows(4))
    config = config_for(tmp_path, modalities={"a": {"kind": "vectr"}})
    with pytest.raises(Exception, match="did you mean 'vector'"):
        build_loader(config)
