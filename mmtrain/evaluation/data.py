"""Evaluation data in memory: a split of a dataset read through the one loading path
(`build_loader`) into a single `Batch`, and helpers to slice it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmtrain.batch import Batch
from mmtrain.data.config import DataConfig
from mmtrain.data.loader import build_loader, resolve_modalities
from mmtrain.data.sources import resolve_source
from mmtrain.errors import ConfigError, DataError


@dataclass
class SplitData:
    """The rows read from one split, and how many there were to read."""

    name: str
    batch: Batch
    total_rows: int | None

    @property
    def size(self) -> int:
        return self.batch.size

    @property
    def class_labels(self) -> Tensor | None:
        """Integer class labels `[N]` (−1: unknown), or None when the dataset has none."""
        return class_labels(self.batch)


def class_labels(batch: Batch) -> Tensor | None:
    """`batch.labels` when they are integer class indices `[N]`; None otherwise (no labels,
    or continuous ones such as the linear-Gaussian latent)."""
    labels = batch.labels
    if labels is None or labels.dim() != 1:
        return None
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        return None
    return labels.long()


def eval_data_config(config: DataConfig, source: str | None = None) -> DataConfig:
    """The data config an evaluation reads: the training run's, optionally pointed at another
    `source` that must hold the same columns. The modality mapping and label columns are
    resolved from the run's source so that they survive the change."""
    if source is None or source == config.source:
        return config
    modalities, labels = resolve_modalities(config)
    return DataConfig(
        source=source,
        modalities=modalities,
        label_columns=labels,
        batch_size=config.batch_size,
        read_rows=config.read_rows,
    )


def split_exists(config: DataConfig, split: str) -> bool:
    """Whether `split` can be resolved for the source (embedded cards and split-named
    files say so without reading any rows)."""
    try:
        resolve_source(config.replace(split=split))
    except DataError:
        return False
    return True


def load_split(
    config: DataConfig,
    split: str,
    max_rows: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
) -> SplitData:
    """Up to `max_rows` rows of `split` as one `Batch` (labels and extra label columns kept).

    Rows pass the loader's seeded shuffle buffer, so a capped read is a random sample of the
    split even when the files are sorted (the multimodal iVAE data are ordered by segment).
    Bad rows are skipped, as in the training loop's evaluation.
    """
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"max_rows must be at least 1, got {max_rows}")
    data = config.replace(
        split=split,
        shuffle=True,
        seed=seed,
        batch_size=batch_size,
        drop_last=False,
        on_bad_row="skip",
        num_workers=0,
    )
    loader = build_loader(data, 0, 1)
    parts: list[Batch] = []
    rows = 0
    for batch in loader:
        parts.append(batch)
        rows += batch.size
        if max_rows is not None and rows >= max_rows:
            break
    if not parts:
        raise DataError("no rows were read")
    merged = Batch.cat(parts)
    if max_rows is not None and merged.size > max_rows:
        merged = merged.take(slice(0, max_rows))
    return SplitData(split, merged, loader.num_rows)
