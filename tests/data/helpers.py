"""Data-test helpers: small parquet datasets and small modality plugins that really decode
cells (numeric lists, PNG bytes), so the loader is tested independently of the built-in
plugins."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from mmtrain.data.config import DataConfig
from mmtrain.errors import DataError
from mmtrain.modality import ModalityPlugin
from mmtrain.registry import MODALITIES

datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0


@dataclass
class ArrayPlugin(ModalityPlugin):
    """Numeric lists → float tensors of `shape`; no NaN check (the loader's job too)."""

    kind: ClassVar[str] = "test-array"
    shape: tuple[int, ...] = (2,)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.shape)

    def decode_cell(self, cell: object) -> torch.Tensor:
        if cell is None or isinstance(cell, str | bytes | dict):
            raise DataError(f"expected a list of numbers, got {type(cell).__name__}")
        array = np.asarray(cell, dtype=np.float32)
        if array.shape != tuple(self.shape):
            raise DataError(f"expected shape {tuple(self.shape)}, got {array.shape}")
        return torch.from_numpy(array.copy())


@dataclass
class BatchArrayPlugin(ArrayPlugin):
    """`ArrayPlugin` with the optional whole-chunk `decode_batch`; counts its calls."""

    kind: ClassVar[str] = "test-array-batch"
    calls: ClassVar[list[int]] = []

    def decode_batch(self, cells: list[object]) -> torch.Tensor:
        type(self).calls.append(len(cells))
        try:
            array = np.stack([np.asarray(c, dtype=np.float32) for c in cells])
        except (TypeError, ValueError) as error:
            raise DataError(f"cannot stack cells: {error}") from None
        if array.shape[1:] != tuple(self.shape):
            raise DataError(f"expected shape {tuple(self.shape)}, got {array.shape[1:]}")
        return torch.from_numpy(array)


@dataclass
class PNGPlugin(ModalityPlugin):
    """Encoded gray images (bytes or Image dicts) → `[1, size, size]` in [0, 1]."""

    kind: ClassVar[str] = "test-png"
    size: int = 4

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (1, self.size, self.size)

    def decode_cell(self, cell: object) -> torch.Tensor:
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if not isinstance(data, bytes):
            raise DataError(f"expected image bytes, got {type(data).__name__}")
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except Exception as error:  # noqa: BLE001
            raise DataError(f"cannot decode image: {error}") from None
        pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        return torch.from_numpy(pixels)[None]


MODALITIES.register("test-array", ArrayPlugin, override=True)
MODALITIES.register("test-png", PNGPlugin, override=True)
MODALITIES.register("test-array-batch", BatchArrayPlugin, override=True)

TEST_MODALITIES = {
    "a": {"kind": "test-array", "options": {"shape": [2]}},
    "b": {"kind": "test-array", "options": {"shape": [3]}},
}


def png_bytes(value: int, size: int = 4) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), value, dtype=np.uint8), "L").save(buffer, "PNG")
    return buffer.getvalue()


def write_shards(root: Path, rows: int, shards: int, null_b_every: int = 0) -> Path:
    """`shards` parquet files under `root` holding ids 0..rows-1."""
    bounds = np.linspace(0, rows, shards + 1).astype(int)
    for i in range(shards):
        part = make_rows(int(bounds[i + 1] - bounds[i]), int(bounds[i]), null_b_every)
        write_parquet(root / f"train-{i:05d}-of-{shards:05d}.parquet", part)
    return root


def make_rows(n: int, start: int = 0, null_b_every: int = 0) -> dict[str, list]:
    """Rows whose cells encode their id: a = [id, -id], b = [id, id, id] (null every k)."""
    ids = list(range(start, start + n))
    b = [None if null_b_every and i % null_b_every == 0 else [float(i)] * 3 for i in ids]
    return {"id": ids, "a": [[float(i), -float(i)] for i in ids], "b": b}


def write_parquet(path: Path, rows: dict[str, list], schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows, schema=schema), path, row_group_size=50)
    return path


def config_for(source: Path | str, **overrides: object) -> DataConfig:
    values: dict[str, object] = {
        "source": str(source),
        "modalities": TEST_MODALITIES,
        "label_columns": ["id"],
        "batch_size": 16,
        "read_rows": 32,
        "shuffle_buffer": 64,
        "presence_check_rows": 1000,
    }
    values.update(overrides)
    return DataConfig.from_dict(values)


def png_of(pixels: np.ndarray) -> bytes:
    """A uint8 `[H, W]` or `[H, W, 3]` array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def write_hub_image_set(
    root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], folder: str | None = None
) -> Path:
    """A local copy of a Hub image-classification set (`ylecun/mnist`, `ufldl-stanford/svhn`)
    in the Hub's schema: per split a parquet file `[folder/]<split>-00000-of-00001.parquet`
    with an `image` column (`Image`: `{bytes, path}` PNG) and a `label` (`ClassLabel` 0–9)."""
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=[str(d) for d in range(10)]),
        }
    )
    target = root / folder if folder else root
    target.mkdir(parents=True, exist_ok=True)
    for split, (pixels, labels) in splits.items():
        rows = {
            "image": [{"bytes": png_of(p), "path": None} for p in pixels],
            "label": [int(label) for label in labels],
        }
        part = datasets.Dataset.from_dict(rows, features=features)
        part.to_parquet(str(target / f"{split}-00000-of-00001.parquet"))
    return root
