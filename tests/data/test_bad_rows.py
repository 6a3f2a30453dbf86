"""Bad input: every kind fails with a `DataError` naming file, row and column (or file and
column), before training where it can; `on_bad_row: skip` skips, counts and reports."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmtrain.data import build_loader
from mmtrain.errors import DataError
from tests.data.helpers import config_for, make_rows, png_bytes, write_parquet


def one_bad_cell(tmp_path: Path, column: str, row: int, value: object) -> Path:
    """Two clean files and one whose `column` holds `value` at `row`."""
    write_parquet(tmp_path / "ds" / "part-0.parquet", make_rows(40, 0))
    rows = make_rows(40, 40)
    rows[column][row] = value
    schema = pa.schema(
        [("id", pa.int64()), ("a", pa.list_(pa.float64())), ("b", pa.list_(pa.float64()))]
    )
    path = write_parquet(tmp_path / "ds" / "part-1.parquet", rows, schema)
    write_parquet(tmp_path / "ds" / "part-2.parquet", make_rows(40, 80))
    return path


def drain(config) -> None:
    for _ in build_loader(config):
        pass


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("a", [1.0, float("nan")], "NaN"),
        ("b", [1.0, 2.0], "shape"),
        ("a", [1.0, 2.0, 3.0], "shape"),
    ],
)
def test_bad_cell_names_file_row_and_column(tmp_path, column, value, problem):
    bad_file = one_bad_cell(tmp_path, column, 7, value)
    with pytest.raises(DataError) as caught:
        drain(config_for(tmp_path / "ds"))
    message = str(caught.value)
    assert str(bad_file) in message
    assert "row 7" in message and f"column {column!r}" in message
    assert problem in message and "on_bad_row: skip" in message


def test_wrong_type_names_file_row_and_column(tmp_path):
    write_parquet(tmp_path / "ds" / "part-0.parquet", make_rows(30))
    rows = make_rows(30, 30)
    rows["b"] = [f"text {i}" for i in range(30)]
    bad_file = write_parquet(tmp_path / "ds" / "part-1.parquet", rows)
    with pytest.raises(DataError) as caught:
        drain(config_for(tmp_path / "ds" / "part-1.parquet", shuffle=False))
    message = str(caught.value)
    assert str(bad_file) in message and "row 0" in message and "column 'b'" in message
    assert "str" in message
    with pytest.raises(DataError, match=re.escape(str(bad_file)) + ".*column 'b'.*type string"):
        build_loader(config_for(tmp_path / "ds"))


def test_undecodable_image_names_file_row_and_column(tmp_path):
    images = [png_bytes(i) for i in range(30)]
    images[11] = b"\x89PNG\r\n\x1a\n not really an image"
    rows = {**make_rows(30), "img": images}
    path = write_parquet(tmp_path / "img.parquet", rows)
    modalities = {"a": {"kind": "test-array"}, "img": {"kind": "test-png"}}
    config = config_for(path, modalities=modalities)
    with pytest.raises(DataError) as caught:
        drain(config)
    message = str(caught.value)
    assert str(path) in message and "row 11" in message and "column 'img'" in message
    assert "cannot decode image" in message
    skipped = build_loader(config.replace(on_bad_row="skip"))
    good = [b for b in skipped]
    assert sum(b.size for b in good) == 29 and skipped.stats.skipped_rows == 1
    assert good[0].x["img"].shape[1:] == (1, 4, 4)


def test_missing_column_names_file_and_column(tmp_path, sharded):
    root = sharded(rows=40, shards=2)
    config = config_for(root, modalities={"a": {"kind": "test-array"}, "c": {"kind": "test-array"}})
    with pytest.raises(DataError, match=r"train-00000-of-00002\.parquet: no column 'c'"):
        build_loader(config)
    rows = make_rows(10)
    del rows["b"]
    partial = write_parquet(root / "train-00002-of-00002.parquet", rows)
    with pytest.raises(DataError, match=re.escape(str(partial)) + ": no column 'b'"):
        build_loader(config_for(root))


def test_missing_column_in_jsonl_names_the_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1, "a": [1, 2]}\n')
    with pytest.raises(DataError, match=re.escape(str(path)) + ": no column 'b'"):
        build_loader(config_for(path))


def test_corrupt_parquet_footer_names_the_file(tmp_path, sharded):
    root = sharded(rows=40, shards=2)
    bad = root / "train-00001-of-00002.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=re.escape(str(bad)) + ": not a readable parquet file"):
        build_loader(config_for(root))


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_parquet_pages_name_the_file(tmp_path, sharded, workers):
    root = sharded(rows=400, shards=2)
    bad = root / "train-00001-of-00002.parquet"
    data = bytearray(bad.read_bytes())
    for k in range(200, 1400):
        data[k] ^= 0x5A
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError) as caught:
        drain(config_for(root, num_workers=workers, persistent_workers=False))
    message = str(caught.value)
    assert message.startswith(f"cannot read {bad}")
    assert "Traceback" not in message


def test_empty_dataset_fails_before_training(tmp_path):
    schema = pa.schema(
        [("id", pa.int64()), ("a", pa.list_(pa.float64())), ("b", pa.list_(pa.float64()))]
    )
    path = tmp_path / "empty.parquet"
    pq.write_table(schema.empty_table(), path)
    with pytest.raises(DataError, match="has no rows"):
        build_loader(config_for(path))


def test_modality_never_present_fails_before_training(tmp_path):
    rows = make_rows(50)
    rows["b"] = [None] * 50
    schema = pa.schema(
        [("id", pa.int64()), ("a", pa.list_(pa.float64())), ("b", pa.list_(pa.float64()))]
    )
    path = write_parquet(tmp_path / "never.parquet", rows, schema)
    with pytest.raises(DataError, match=r"modality 'b' \(column 'b'\) is null in all 50 rows"):
        build_loader(config_for(path))


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_mode_skips_counts_and_reports(tmp_path, caplog, workers):
    write_parquet(tmp_path / "ds" / "part-0.parquet", make_rows(60, 0))
    rows = make_rows(60, 60)
    rows["a"][3] = [float("nan"), 0.0]
    rows["a"][9] = [1.0]
    rows["b"][20] = [1.0, 2.0]
    write_parquet(tmp_path / "ds" / "part-1.parquet", rows)
    config = config_for(
        tmp_path / "ds", on_bad_row="skip", num_workers=workers, persistent_workers=False
    )
    loader = build_loader(config)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        with caplog.at_level(logging.WARNING, logger="mmtrain.data"):
            batches = list(loader)
        ids = sorted(i for b in batches for i in b.labels.tolist())
        assert ids == sorted(set(range(120)) - {63, 69, 80})
        assert sum(b.size != 16 for b in batches) <= max(1, workers)
        assert loader.stats.skipped_rows == 3 and loader.stats.epoch == epoch
        assert loader.metrics()["data/skipped_rows"] == 3
        assert any("row 3, column 'a'" in note for note in loader.stats.bad_rows)
    assert [s.skipped_rows for s in loader.history] == [3, 3]
    assert "skipped 3 bad rows" in caplog.text


def test_all_rows_bad_in_skip_mode_is_an_error(tmp_path):
    rows = make_rows(20)
    rows["a"] = [[1.0]] * 20
    path = write_parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(DataError, match="received no examples.*all 20 rows read were bad"):
        drain(config_for(path, on_bad_row="skip"))


def test_whole_chunk_decoding_falls_back_to_cells_to_name_bad_rows(tmp_path):
    from tests.data.helpers import BatchArrayPlugin

    one_bad_cell(tmp_path, "b", 5, [1.0, 2.0])
    modalities = {
        "a": {"kind": "test-array-batch"},
        "b": {"kind": "test-array-batch", "options": {"shape": [3]}},
    }
    BatchArrayPlugin.calls.clear()
    with pytest.raises(DataError, match=r"part-1\.parquet, row 5, column 'b'.*shape"):
        drain(config_for(tmp_path / "ds", modalities=modalities))
    assert BatchArrayPlugin.calls
    skipped = build_loader(config_for(tmp_path / "ds", modalities=modalities, on_bad_row="skip"))
    ids = sorted(i for b in skipped for i in b.labels.tolist())
    assert ids == sorted(set(range(120)) - {45}) and skipped.stats.skipped_rows == 1
