"""The data section of a training config: where rows come from, which columns feed which
modality plugins, and how the stream is shuffled, batched and policed."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from mmtrain.errors import ConfigError

BAD_ROW_POLICIES = ("error", "skip")


@dataclass(frozen=True)
class ModalitySpec:
    """One modality: the dataset `column` it reads, the plugin `kind` that decodes the cells
    (a `MODALITIES` name) and the plugin's `options`."""

    column: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, value: object) -> ModalitySpec:
        """`{column?, kind, options?}`; the column defaults to the modality name."""
        if isinstance(value, ModalitySpec):
            return value
        if not isinstance(value, dict):
            raise ConfigError(
                f"data.modalities.{name} must be a mapping with 'kind' (and optionally "
                f"'column' and 'options'), got {value!r}"
            )
        _check_keys(f"data.modalities.{name}", value, ("column", "kind", "options"))
        if "kind" not in value:
            raise ConfigError(
                f"data.modalities.{name} needs 'kind', the modality plugin that decodes it "
                "(e.g. vector, image, text, label)"
            )
        options = value.get("options") or {}
        if not isinstance(options, dict):
            raise ConfigError(f"data.modalities.{name}.options must be a mapping, got {options!r}")
        column = value.get("column", name)
        if not isinstance(column, str) or not column:
            raise ConfigError(f"data.modalities.{name}.column must be a column name")
        return cls(column, str(value["kind"]), dict(options))

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

    source: str
    split: str = "train"
    modalities: dict[str, ModalitySpec] = field(default_factory=dict)
    label_columns: tuple[str, ...] | None = None
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
        if not isinstance(self.source, str) or not self.source.strip():
            raise ConfigError("data.source must name a dataset, a directory, files or a glob")
        modalities = {
            str(name): ModalitySpec.from_dict(str(name), spec)
            for name, spec in (self.modalities or {}).items()
        }
        object.__setattr__(self, "modalities", modalities)
        if self.label_columns is not None:
            labels = (
                (self.label_columns,)
                if isinstance(self.label_columns, str)
                else tuple(self.label_columns)
            )
            object.__setattr__(self, "label_columns", labels)
        for name in (
            "batch_size",
            "shuffle_buffer",
            "interleave_shards",
            "read_rows",
            "prefetch_factor",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{name} must be a positive integer, got {value!r}")
        for name in ("num_workers", "presence_check_rows", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"data.{name} must be a non-negative integer, got {value!r}")
        if self.on_bad_row not in BAD_ROW_POLICIES:
            raise ConfigError(
                f"data.on_bad_row must be one of {', '.join(BAD_ROW_POLICIES)}, "
                f"got {self.on_bad_row!r}"
            )
        if self.missing_rate is not None and not 0.0 <= float(self.missing_rate) < 1.0:
            raise ConfigError(f"data.missing_rate must be in [0, 1), got {self.missing_rate}")
        if self.format not in (None, "parquet", "arrow", "json"):
            raise ConfigError(
                f"data.format must be parquet, arrow or json (or left out), got {self.format!r}"
            )
        columns = [spec.column for spec in modalities.values()]
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ConfigError(f"data.modalities read the same column twice: {repeated}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        """Build from a YAML/JSON mapping; unknown keys fail with the closest known key."""
        if not isinstance(values, dict):
            raise ConfigError(f"the data section must be a mapping, got {values!r}")
        _check_keys("data", values, [f.name for f in fields(cls)])
        if "source" not in values:
            raise ConfigError("data.source is required (a dataset name, directory, files or glob)")
        return cls(**values)

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


def _check_keys(where: str, values: dict[str, Any], known: list[str] | tuple[str, ...]) -> None:
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown key {where}.{key}{hint} Known: {', '.join(known)}")
