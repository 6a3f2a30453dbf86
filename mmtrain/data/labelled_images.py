"""Labelled image sets (MNIST, SVHN) read through Hugging Face `datasets` for the dataset
builders: a Hub name (`ylecun/mnist`, `ufldl-stanford/svhn` with config `cropped_digits`) or a
local directory of the same files go through the same `datasets.load_dataset` call, and a
folder written by `save_to_disk` through `datasets.load_from_disk`. Rows must follow the Hub
schema: an `image` column (Hugging Face `Image`: `{bytes, path}`) and an integer `label`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
from PIL import Image

from mmtrain.errors import ConfigError, DataError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@dataclass(frozen=True)
class LabelledImages:
    """`pixels` uint8 `[N, H, W]` (gray) or `[N, H, W, 3]` (RGB) and `labels` int64 `[N]`."""

    pixels: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> LabelledImages:
        return LabelledImages(self.pixels[index], self.labels[index])


def load_labelled_images(
    source: str,
    what: str,
    shape: tuple[int, ...],
    config: str | None = None,
    ten_means_zero: bool = False,
) -> dict[str, LabelledImages]:
    """Every split of `source` decoded to pixels of `shape` (`(H, W)` gray or `(H, W, 3)`
    RGB), labels 0–9. `config` is the Hub configuration (a local directory's sub-folder of
    that name is read instead, as in a download of the Hub repository). `ten_means_zero` maps
    label 10 to 0 (SVHN's original `.mat` files mark the digit 0 as 10). `what` names the
    set in errors."""
    loaded = _load(source, what, config)
    return {
        split: _decode(part, what, split, shape, ten_means_zero) for split, part in loaded.items()
    }


def _load(source: str, what: str, config: str | None) -> dict[str, datasets.Dataset]:
    path = Path(source).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{what} source {source!r} is a file; give a directory of its split files "
            "(train-*.parquet, test-*.parquet, …) or a Hub dataset name"
        )
    try:
        if path.is_dir() and (path / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(path))
        elif path.is_dir():
            sub = config if config and (path / config).is_dir() else None
            loaded = datasets.load_dataset(str(path), data_dir=sub)
        else:
            _check_network(source, what)
            loaded = datasets.load_dataset(source, config)
    except Exception as error:  # noqa: BLE001 - any loader failure becomes one clear error
        raise DataError(f"cannot read {what} from {source!r}: {error}") from None
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    return dict(loaded)


def _check_network(source: str, what: str) -> None:
    """Fail within seconds when the Hub is out of reach and offline mode is not set (with
    offline mode `datasets` reads its cache, or fails at once)."""
    if any(
        os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for v in OFFLINE_VARIABLES
    ):
        return
    from mmtrain.data.sources import hub_offline_reason

    reason = hub_offline_reason()
    if reason is not None:
        raise DataError(
            f"{what} source {source!r} is not a local directory, so it would be read from the "
            f"Hugging Face Hub, but there is no network ({reason}); give a local copy instead"
        )


def _decode(
    part: datasets.Dataset, what: str, split: str, shape: tuple[int, ...], ten_means_zero: bool
) -> LabelledImages:
    missing = [c for c in ("image", "label") if c not in part.column_names]
    if missing:
        raise DataError(
            f"{what} split {split!r} has no column {missing[0]!r} (it has "
            f"{', '.join(part.column_names)}); expected the Hub schema: image, label"
        )
    table = part.select_columns(["image", "label"]).with_format("arrow")[:]
    mode = "L" if len(shape) == 2 else "RGB"
    pixels = np.empty((table.num_rows, *shape), dtype=np.uint8)
    for row, cell in enumerate(table.column("image").to_pylist()):
        pixels[row] = _pixels(cell, mode, shape, f"{what} split {split!r} row {row}")
    labels = _labels(table.column("label"), what, split)
    if ten_means_zero:
        labels = np.where(labels == 10, 0, labels)
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if len(bad):
        raise DataError(
            f"{what} split {split!r} row {bad[0]}: label {labels[bad[0]]} is not a digit 0-9"
        )
    return LabelledImages(pixels, labels)


def _pixels(cell: object, mode: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if data is None and isinstance(cell, dict) and cell.get("path"):
        data = Path(cell["path"]).read_bytes()
    if not isinstance(data, bytes):
        raise DataError(f"{where}: expected an encoded image, got {type(data).__name__}")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # noqa: BLE001 - any undecodable cell is one clear error
        raise DataError(f"{where}: cannot decode the image ({error})") from None
    array = np.asarray(image.convert(mode))
    if array.shape != shape:
        raise DataError(f"{where}: image of shape {array.shape}, expected {shape}")
    return array


def _labels(column: pa.ChunkedArray, what: str, split: str) -> np.ndarray:
    if column.null_count or not pa.types.is_integer(column.type):
        raise DataError(
            f"{what} split {split!r}: column 'label' must hold integers without nulls, "
            f"got {column.type} with {column.null_count} nulls"
        )
    return column.to_numpy().astype(np.int64)
