"""Embedded datasets: generated on first use as parquet shards in a cache directory, then read
through the same streaming path as any local dataset.

Each dataset is an `EmbeddedDataset` registered in `mmtrain.registry.DATASETS`. Its builder
returns one Arrow table per split (Hugging Face feature metadata in the schema, missing
modalities as nulls) and the default column → modality mapping. `ensure_embedded` writes the
shards and a `card.json` under `$MMTRAIN_HOME/datasets/<name>-v<version>-<hash of options>`
(default `~/.cache/mmtrain`) once, atomically, and returns the directory.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmtrain import simulations
from mmtrain.data.config import ModalitySpec
from mmtrain.errors import ConfigError, DataError
from mmtrain.registry import DATASETS
from mmtrain.schema import check_keys

CARD = "card.json"
ROW_GROUP_ROWS = 1024


def mmtrain_home() -> Path:
    """`$MMTRAIN_HOME`, default `~/.cache/mmtrain`."""
    return Path(os.environ.get("MMTRAIN_HOME") or Path.home() / ".cache" / "mmtrain")


@dataclass(frozen=True)
class BuiltDataset:
    """What a builder returns: one table per split and how to read it. `card_fields` are
    written into `card.json` beside the standard keys (what the data were made from, how they
    differ from a published set, licences)."""

    tables: dict[str, pa.Table]
    modalities: dict[str, ModalitySpec]
    label_columns: tuple[str, ...] = ()
    provenance: str = ""
    card_fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EmbeddedDataset:
    """A dataset mmtrain can generate offline: `builder(**options)` → `BuiltDataset`.

    The builder's keyword arguments and their defaults are the dataset's options; every
    builder takes `seed` and `missing_rate` (the fraction of modality cells dropped to null,
    never all of a row's). `shards` is the number of parquet files per split.
    """

    name: str
    description: str
    builder: Callable[..., BuiltDataset]
    version: int = 1
    shards: int = 8

    def defaults(self) -> dict[str, Any]:
        return {
            name: p.default
            for name, p in inspect.signature(self.builder).parameters.items()
            if p.default is not inspect.Parameter.empty
        }

    def resolve_options(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """The builder's defaults updated by `options`; unknown names raise `ConfigError`."""
        known = self.defaults()
        given = {k: v for k, v in (options or {}).items() if v is not None}
        owner = f" for embedded dataset {self.name!r}"
        check_keys(given, list(known), what="option", owner=owner)
        return {**known, **given}

    def cache_key(self, options: dict[str, Any]) -> str:
        text = json.dumps(
            {"name": self.name, "version": self.version, "options": options},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def register_embedded(dataset: EmbeddedDataset) -> EmbeddedDataset:
    DATASETS.register(dataset.name, dataset)
    return dataset


def embedded_names() -> list[str]:
    """Names of the registered embedded datasets."""
    return [name for name in DATASETS.names() if isinstance(DATASETS.get(name), EmbeddedDataset)]


def get_embedded(name: str) -> EmbeddedDataset:
    dataset = DATASETS.get(name)
    if not isinstance(dataset, EmbeddedDataset):
        raise ConfigError(f"dataset {name!r} is registered but is not an embedded dataset")
    return dataset


def is_embedded(name: str) -> bool:
    return "/" not in name and os.sep not in name and name in DATASETS


def read_card(directory: Path | str) -> dict[str, Any]:
    """The `card.json` that `make_embedded` writes next to the shards."""
    path = Path(directory) / CARD
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read dataset card {path}: {error}") from None


def make_embedded(
    name: str,
    out: Path | str,
    options: dict[str, Any] | None = None,
    shards: int | None = None,
) -> dict[str, Any]:
    """Generate embedded dataset `name` into directory `out` (parquet shards and
    `card.json`); return the card. `out` must be empty or hold an earlier `make_embedded`
    output, whose shards are replaced."""
    dataset = get_embedded(name)
    resolved = dataset.resolve_options(options)
    out = Path(out)
    _clear_previous(out)
    built = dataset.builder(**resolved)
    out.mkdir(parents=True, exist_ok=True)
    num_shards = shards or dataset.shards
    splits = {}
    for split, table in built.tables.items():
        files = write_shards(table, out, split, num_shards)
        splits[split] = {"rows": table.num_rows, "files": files}
    first = next(iter(built.tables.values()))
    card = {
        "name": name,
        "version": dataset.version,
        "description": dataset.description,
        "source": built.provenance,
        "seed": resolved.get("seed"),
        "options": resolved,
        "splits": splits,
        "columns": {f.name: str(f.type) for f in first.schema},
        "modalities": {k: v.to_dict() for k, v in built.modalities.items()},
        "label_columns": list(built.label_columns),
    }
    card.update({k: v for k, v in built.card_fields.items() if k not in card})
    (out / CARD).write_text(json.dumps(card, indent=2, default=str) + "\n")
    return card


def _clear_previous(out: Path) -> None:
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / CARD).is_file():
        raise DataError(
            f"{out} is not empty and holds no {CARD}; write the dataset to a new directory"
        )
    for info in read_card(out).get("splits", {}).values():
        for name in info.get("files", []):
            (out / name).unlink(missing_ok=True)
    (out / CARD).unlink()


def ensure_embedded(name: str, options: dict[str, Any] | None = None) -> Path:
    """The cache directory of `name` with these options, generating it on first use."""
    dataset = get_embedded(name)
    resolved = dataset.resolve_options(options)
    root = mmtrain_home() / "datasets"
    target = root / f"{name}-v{dataset.version}-{dataset.cache_key(resolved)}"
    if (target / CARD).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    try:
        make_embedded(name, scratch, resolved)
        try:
            os.rename(scratch, target)
        except OSError:
            if not (target / CARD).exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def write_shards(table: pa.Table, out: Path, split: str, num_shards: int) -> list[str]:
    """Write `table` as `num_shards` contiguous parquet files `<split>-0000i-of-0000n.parquet`."""
    num_shards = max(1, min(num_shards, table.num_rows))
    bounds = np.linspace(0, table.num_rows, num_shards + 1).round().astype(int)
    names = []
    for i in range(num_shards):
        name = f"{split}-{i:05d}-of-{num_shards:05d}.parquet"
        part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        pq.write_table(part, out / name, row_group_size=ROW_GROUP_ROWS)
        names.append(name)
    return names


def table_with_features(columns: dict[str, Any], features: datasets.Features) -> pa.Table:
    """An Arrow table whose schema carries the Hugging Face features (Image, List, …)."""
    return pa.table(columns, schema=features.arrow_schema)


def float_lists(values: np.ndarray, present: np.ndarray | None = None) -> pa.Array:
    """Rows of a float32 `[N, *event]` array as (nested) lists; rows not `present` are null."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    array: pa.Array = pa.array(values.reshape(-1))
    event = values.shape[1:]
    for depth, size in enumerate(reversed(event)):
        offsets = pa.array(np.arange(0, len(array) + 1, size, dtype=np.int32))
        outermost = depth == len(event) - 1
        mask = pa.array(~present) if outermost and present is not None else None
        array = pa.ListArray.from_arrays(offsets, array, mask=mask)
    return array


def nested_float_type(depth: int) -> datasets.List | datasets.Value:
    feature: Any = datasets.Value("float32")
    for _ in range(depth):
        feature = datasets.List(feature)
    return feature


def missing_mask(rng: np.random.RandomState, rows: int, modalities: int, rate: float) -> np.ndarray:
    """Availability `[rows, modalities]`: about `1 − rate` of the cells kept and at least one
    per row (the foundation's CPM-Nets mask generator)."""
    if rate <= 0:
        return np.ones((rows, modalities), dtype=bool)
    return simulations.cpm_missing_mask(rng, rows, modalities, rate)


def check_missing_rate(missing_rate: float) -> float:
    """The missing rate as a float in [0, 1), or a ConfigError."""
    if not 0.0 <= float(missing_rate) < 1.0:
        raise ConfigError(f"missing_rate must be in [0, 1), got {missing_rate}")
    return float(missing_rate)


def build_linear_gaussian(
    num_modalities: int = 5,
    num_examples: int = 5000,
    noise_std: float = 1.0,
    missing_rate: float = 0.0,
    seed: int = 1,
) -> BuiltDataset:
    """Linear Gaussian modalities x1..xM (docs/math.md §4.1), ground-truth latent `z`."""
    rate = check_missing_rate(missing_rate)
    data = simulations.make_linear_gaussian(
        num_modalities=num_modalities, num_examples=num_examples, noise_std=noise_std, seed=seed
    )
    names = [f"x{i + 1}" for i in range(num_modalities)]
    avail = missing_mask(np.random.RandomState(seed + 1), num_examples, num_modalities, rate)
    columns = {name: float_lists(x, avail[:, i]) for i, (name, x) in enumerate(zip(names, data.x))}
    columns["z"] = float_lists(data.z)
    features = datasets.Features({name: nested_float_type(1) for name in [*names, "z"]})
    modalities = {
        name: ModalitySpec(name, "vector", {"shape": [int(x.shape[1])], "likelihood": "normal"})
        for name, x in zip(names, data.x)
    }
    return BuiltDataset(
        {"train": table_with_features(columns, features)},
        modalities,
        ("z",),
        "mmtrain.simulations.make_linear_gaussian",
    )


def build_ivae_bimodal(
    num_examples: int = 4000,
    num_segments: int = 5,
    latent_dim: int = 2,
    noise_std: float = 0.1,
    missing_rate: float = 0.0,
    seed: int = 1,
) -> BuiltDataset:
    """Segment label `u` (integer, one-hot by the label plugin) and observation `x`
    (docs/math.md §4.2); ground-truth `segment` and `sources` for evaluation."""
    rate = check_missing_rate(missing_rate)
    data = simulations.make_ivae_bimodal(
        num_examples=num_examples,
        num_segments=num_segments,
        latent_dim=latent_dim,
        noise_std=noise_std,
        seed=seed,
    )
    avail = missing_mask(np.random.RandomState(seed + 1), num_examples, 2, rate)
    segments = data.segments.astype(np.int64)
    columns = {
        "u": pa.array(segments, mask=~avail[:, 0]),
        "x": float_lists(data.x["x"], avail[:, 1]),
        "segment": pa.array(segments),
        "sources": float_lists(data.sources),
    }
    features = datasets.Features(
        {
            "u": datasets.Value("int64"),
            "x": nested_float_type(1),
            "segment": datasets.Value("int64"),
            "sources": nested_float_type(1),
        }
    )
    modalities = {
        "u": ModalitySpec("u", "label", {"num_classes": num_segments}),
        "x": ModalitySpec("x", "vector", {"shape": [latent_dim], "likelihood": "normal"}),
    }
    return BuiltDataset(
        {"train": table_with_features(columns, features)},
        modalities,
        ("segment", "sources"),
        "mmtrain.simulations.make_ivae_bimodal",
    )


def build_ivae_multimodal(
    num_modalities: int = 4,
    num_examples: int = 10000,
    num_segments: int = 5,
    latent_dim: int = 10,
    observed_dim: int = 25,
    noise_std: float = 0.5,
    family: str = "gaussian",
    missing_rate: float = 0.5,
    faithful: bool = True,
    seed: int = 2,
    condition_samples: int = 10000,
) -> BuiltDataset:
    """Train and test splits of the multi-modal iVAE simulation (docs/math.md §4.3); the
    generator's missing-modality masks are stored as nulls."""
    train, test = simulations.make_ivae_multimodal(
        num_modalities=num_modalities,
        num_examples=num_examples,
        num_segments=num_segments,
        latent_dim=latent_dim,
        observed_dim=observed_dim,
        noise_std=noise_std,
        family=family,
        missing_rate=check_missing_rate(missing_rate),
        faithful=faithful,
        seed=seed,
        condition_samples=condition_samples,
    )
    names = list(train.x)
    features = datasets.Features(
        {
            **{name: nested_float_type(1) for name in names},
            "segment": datasets.Value("int64"),
            "sources": nested_float_type(1),
        }
    )
    tables = {}
    for split, part in (("train", train), ("test", test)):
        columns = {
            name: float_lists(part.x[name], part.avail[:, i]) for i, name in enumerate(names)
        }
        columns["segment"] = pa.array(part.segments.astype(np.int64))
        columns["sources"] = float_lists(part.sources)
        tables[split] = table_with_features(columns, features)
    modalities = {
        name: ModalitySpec(name, "vector", {"shape": [observed_dim], "likelihood": "normal"})
        for name in names
    }
    return BuiltDataset(
        tables, modalities, ("segment", "sources"), "mmtrain.simulations.make_ivae_multimodal"
    )


register_embedded(
    EmbeddedDataset(
        "linear-gaussian",
        "linear Gaussian modalities with a shared and private latent blocks (docs/math.md §4.1)",
        build_linear_gaussian,
    )
)
register_embedded(
    EmbeddedDataset(
        "ivae-bimodal",
        "segment label and non-linear mixture of non-stationary sources (docs/math.md §4.2)",
        build_ivae_bimodal,
    )
)
register_embedded(
    EmbeddedDataset(
        "ivae-multimodal",
        "four non-linear views of non-stationary sources, half the cells missing (docs/math.md §4.3)",
        build_ivae_multimodal,
    )
)
