"""The data section of a training config: where rows come from, which columns feed which
modality plugins, and how the stream is shuffled, batched and policed."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from mmtrain.errors import ConfigError
from mmtrain.schema import build, convert_fields

#: integer fields that must be ≥ 1, and those that must be ≥ 0
_POSITIVE = ("batch_size", "shuffle_buffer", "interleave_shards", "read_rows", "prefetch_factor")
_NON_NEGATIVE = ("num_workers", "presence_check_rows", "seed")


@dataclass(frozen=True)
class ModalitySpec:
    """One modality: the dataset `column` it reads, the plugin `kind` that decodes the cells
    (a `MODALITIES` name) and the plugin's `options`."""

    column: str
    kind: str = field(
        metadata={"doc": "the modality plugin that decodes it, e.g. vector, image, text, label"}
    )
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, value: object) -> ModalitySpec:
        """`{column?, kind, options?}`; the column defaults to the modality name."""
        where = f"data.modalities.{name}"
        if isinstance(value, ModalitySpec):
            spec = value
        elif isinstance(value, dict):
            values = {"column": name, **value}
            if values.get("options") is None:
                values.pop("options", None)
            spec = build(cls, values, where)
        else:
            raise ConfigError(
                f"{where} must be a mapping with 'kind' (and optionally 'column' and "
                f"'options'), got {value!r}"
            )
        if not spec.column:
            raise ConfigError(f"{where}.column must be a column name")
        return spec

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "kind": self.kind, "options": dict(self.options)}


@dataclass(frozen=True)
class DataConfig:
    """Everything `build_loader` needs.

    `source` is an embedded dataset name (`mmtrain data make --list`), a local directory,
    file or glob of parquet / arrow / jsonl files, a folder written by `datasets`'
    `save_to_disk` (a `Dataset`, or a `DatasetDict` whose split `split` is read), or a
    Hugging Face Hub dataset name.
    `modalities` maps modality names (in model order) to a column and a plugin; it may be
    left empty for an embedded dataset, which brings its own mapping. `label_columns` are
    read for evaluation only (the first becomes `Batch.labels`). `missing_rate` and
    `options` configure an embedded dataset's generator.

    Shuffling: the shard (file) order is reshuffled every epoch and rows pass a buffer of
    `shuffle_buffer` rows. `interleave_shards > 1` fills the buffer from that many shards at
    once (better mixing when files are large and sorted), but the `datasets` reader then
    pauses `datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN` (5 s) at the end of every pass.
    `read_rows` is the size of the Arrow chunks decoded at once.
    """

    source: str = field(metadata={"doc": "a dataset name, directory, files or glob"})
    split: str = "train"
    #: a mapping's column defaults to its modality name (`ModalitySpec.from_dict`)
    modalities: dict[str, ModalitySpec | dict[str, Any]] = field(default_factory=dict)
    label_columns: tuple[str, ...] | str | None = None
    batch_size: int = 256
    shuffle: bool = True
    shuffle_buffer: int = 10_000
    interleave_shards: int = 1
    seed: int = 0
    num_workers: int = 0
    persistent_workers: bool = True
    prefetch_factor: int = 4
    pin_memory: bool = False
    drop_last: bool = False
    on_bad_row: Literal["error", "skip"] = "error"
    read_rows: int = 1024
    presence_check_rows: int = 10_000
    missing_rate: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    hub_config: str | None = None
    hub_revision: str | None = None
    format: Literal["parquet", "arrow", "json"] | None = None
    in_memory: bool = False
    modality_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.label_columns, str):
            object.__setattr__(self, "label_columns", (self.label_columns,))
        convert_fields(self, lambda name: f"data.{name}")
        modalities = {
            name: ModalitySpec.from_dict(name, spec) for name, spec in self.modalities.items()
        }
        object.__setattr__(self, "modalities", modalities)
        if not self.source.strip():
            raise ConfigError("data.source must name a dataset, a directory, files or a glob")
        for name in _POSITIVE:
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"data.{name} must be a positive integer, got {getattr(self, name)!r}"
                )
        for name in _NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"data.{name} must be a non-negative integer, got {getattr(self, name)!r}"
                )
        if self.missing_rate is not None and not 0.0 <= self.missing_rate < 1.0:
            raise ConfigError(f"data.missing_rate must be in [0, 1), got {self.missing_rate}")
        columns = [spec.column for spec in self.modalities.values()]
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ConfigError(f"data.modalities read the same column twice: {repeated}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        """Build from a YAML/JSON mapping; unknown keys fail with the closest known key."""
        return build(cls, values, "data")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping that `from_dict` turns back into an equal config."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "modalities":
                value = {name: spec.to_dict() for name, spec in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out

    def replace(self, **changes: Any) -> DataConfig:
        return replace(self, **changes)
