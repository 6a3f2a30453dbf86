"""Where rows come from: an embedded dataset (generated once into the cache), local parquet /
arrow / jsonl files (a directory, a file, or a glob), a folder written by `datasets`'
`save_to_disk` (a `Dataset`, or a `DatasetDict` with a folder per split), or a Hugging Face
Hub dataset.

`resolve_source` turns `DataConfig.source` and `split` into a `Source`: the files of the
split, their format and, for embedded data, the dataset card with its default modality
mapping. Local files are checked before anything streams: a file whose parquet or arrow
schema cannot be read, or that lacks a configured column, fails naming the file.
"""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from mmtrain.data.config import DataConfig, ModalitySpec
from mmtrain.data.embedded import CARD, embedded_names, ensure_embedded, is_embedded, read_card
from mmtrain.errors import ConfigError, DataError

FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json"}
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
HUB_PROBE_TIMEOUT_S = 2.5
#: `Source.format` of a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`
SAVED_FORMAT = "save_to_disk"
#: what `Dataset.save_to_disk` writes beside its Arrow files, and `DatasetDict.save_to_disk`
SAVED_DATASET_FILES = ("state.json", "dataset_info.json")
SAVED_DICT_FILE = "dataset_dict.json"
LOCAL_HINT = (
    "point data.source at local files instead: a directory, a file or a glob of parquet, "
    "arrow or jsonl files (e.g. source: /data/mine/*.parquet), or use an embedded dataset"
)


@dataclass(frozen=True)
class Source:
    """A resolved data source for one split.

    `kind` is "embedded", "local" or "hub". `files` are the local files of the split in
    shard order (empty for the Hub). `card` is an embedded dataset's card. `directory` is
    the folder `datasets.load_from_disk` reads, for the `save_to_disk` format.
    """

    kind: str
    name: str
    split: str
    format: str | None = None
    files: tuple[str, ...] = ()
    card: dict[str, Any] = field(default_factory=dict)
    hub_config: str | None = None
    hub_revision: str | None = None
    directory: str | None = None

    def shard_name(self, index: int) -> str:
        """The file behind shard `index` (one shard per file)."""
        if self.files and 0 <= index < len(self.files):
            return self.files[index]
        return f"{self.name} ({self.split}) shard {index}"

    def default_modalities(self) -> dict[str, ModalitySpec]:
        return {
            name: ModalitySpec.from_dict(name, spec)
            for name, spec in self.card.get("modalities", {}).items()
        }

    def default_label_columns(self) -> tuple[str, ...]:
        return tuple(self.card.get("label_columns", ()))

    def known_rows(self) -> int | None:
        """Rows in the split when the files say so cheaply (parquet footers, cards)."""
        splits = self.card.get("splits", {})
        if self.split in splits and len(splits[self.split]["files"]) == len(self.files):
            return int(splits[self.split]["rows"])
        if self.format == "parquet" and self.files:
            return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)
        if self.format == SAVED_FORMAT and self.directory:
            import datasets  # memory-maps the Arrow files: cheap

            return int(datasets.load_from_disk(self.directory).num_rows)
        return None


def resolve_source(config: DataConfig) -> Source:
    """The `Source` behind `config.source` and `config.split` (generating embedded data)."""
    name = config.source.strip()
    if is_embedded(name):
        options = dict(config.options)
        if config.missing_rate is not None:
            options["missing_rate"] = config.missing_rate
        directory = ensure_embedded(name, options)
        card = read_card(directory)
        if config.split not in card["splits"]:
            raise DataError(
                f"embedded dataset {name!r} has no split {config.split!r}; it has "
                f"{', '.join(card['splits'])}"
            )
        files = tuple(str(directory / f) for f in card["splits"][config.split]["files"])
        return Source("embedded", name, config.split, "parquet", files, card)
    if config.missing_rate is not None or config.options:
        raise ConfigError(
            f"data.missing_rate and data.options configure embedded datasets only; "
            f"{name!r} is not one (embedded: {', '.join(embedded_names())})"
        )
    saved = saved_to_disk(name, config.split)
    if saved is not None:
        folder, split, files = saved
        return Source("local", name, split, SAVED_FORMAT, tuple(files), directory=str(folder))
    local = _local_files(name, config.split)
    if local is not None:
        files, split = local
        fmt = config.format or _format_of(files)
        directory = Path(name).expanduser()
        card = read_card(directory) if (directory / CARD).is_file() else {}
        return Source("local", name, split, fmt, tuple(files), card)
    if _looks_like_path(name):
        raise DataError(
            f"no files match data.source {name!r} (resolved from {os.getcwd()}); expected a "
            "directory, a file or a glob of parquet, arrow or jsonl files"
        )
    source = Source(
        "hub",
        name,
        config.split,
        hub_config=config.hub_config,
        hub_revision=config.hub_revision,
    )
    check_hub(source)
    return source


def saved_to_disk(name: str, split: str) -> tuple[Path, str, list[str]] | None:
    """For a folder written by `save_to_disk`: the folder of `split` (a `DatasetDict`'s
    split folder, or the `Dataset` folder itself, which is the 'train' split), the split's
    name and its Arrow files in shard order. None for anything else."""
    path = Path(name).expanduser()
    if any(ch in name for ch in "*?[") or not path.is_dir():
        return None
    if (path / SAVED_DICT_FILE).is_file():
        try:
            splits = list(json.loads((path / SAVED_DICT_FILE).read_text())["splits"])
        except (ValueError, KeyError, TypeError) as error:
            raise DataError(
                f"{path / SAVED_DICT_FILE} is not a DatasetDict index: {error}"
            ) from None
        canonical = next((c for c, aliases in SPLIT_ALIASES.items() if split in aliases), None)
        wanted = [split, *(SPLIT_ALIASES.get(canonical, ()) if canonical else ())]
        chosen = next((s for s in wanted if s in splits), None)
        if chosen is None:
            raise DataError(
                f"{path} (a saved DatasetDict) has no split {split!r}; it has "
                f"{', '.join(sorted(splits))}"
            )
        folder = path / chosen
    elif all((path / f).is_file() for f in SAVED_DATASET_FILES):
        if split not in SPLIT_ALIASES["train"]:
            raise DataError(
                f"{path} (a saved Dataset) has one split, used as 'train'; it has no split "
                f"{split!r}"
            )
        folder, chosen = path, split
    else:
        return None
    try:
        state = json.loads((folder / "state.json").read_text())
        files = [str((folder / f["filename"]).resolve()) for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"{folder / 'state.json'} is not a saved dataset's state: {error}"
        ) from None
    return folder, chosen, files


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith((".", "/", "~"))
        or any(ch in name for ch in "*?[")
        or name.endswith(tuple(FORMATS) + COMPRESSED)
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


def _local_files(name: str, split: str) -> tuple[list[str], str] | None:
    path = Path(name).expanduser()
    if any(ch in name for ch in "*?["):
        files = sorted(p for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        files = [os.path.abspath(f) for f in files]
        return (files, split) if files else None
    if path.is_file():
        return [str(path.resolve())], split
    if path.is_dir():
        files = sorted(
            str(p.resolve())
            for p in path.rglob("*")
            if p.is_file() and _data_suffix(p.name) and not _hidden(p.relative_to(path))
        )
        if not files:
            raise DataError(f"directory {path} holds no parquet, arrow or jsonl files")
        return _split_files(path, files, split), split
    return None


def _hidden(relative: Path) -> bool:
    return any(part.startswith((".", "_")) for part in relative.parts)


def _data_suffix(filename: str) -> str | None:
    name = filename.lower()
    for ext in COMPRESSED:
        if name.endswith(ext):
            name = name[: -len(ext)]
    for suffix in FORMATS:
        if name.endswith(suffix):
            return suffix
    return None


def _format_of(files: list[str]) -> str:
    formats = {FORMATS.get(_data_suffix(Path(f).name) or "") for f in files}
    if None in formats or len(formats) != 1:
        raise DataError(
            f"cannot tell the format of {len(files)} files (extensions "
            f"{sorted({Path(f).suffix for f in files})}); use files of one format "
            "(.parquet, .arrow, .jsonl) or set data.format"
        )
    return formats.pop()  # type: ignore[return-value]


def _split_tokens(relative: str) -> set[str]:
    return {t for t in re.split(r"[\\/\-._ 0-9]+", relative.lower()) if t}


def _split_files(root: Path, files: list[str], split: str) -> list[str]:
    """Files of `split` under `root`, by the Hugging Face naming convention: a path part or
    file name token `train`, `validation` (valid, val, dev) or `test`. A directory whose
    files name no split is all `train`."""
    tokens = {f: _split_tokens(os.path.relpath(f, root)) for f in files}
    found: dict[str, list[str]] = {}
    for f, words in tokens.items():
        for canonical, aliases in SPLIT_ALIASES.items():
            if words & set(aliases):
                found.setdefault(canonical, []).append(f)
                break
    if not found:
        if split != "train":
            raise DataError(
                f"directory {root} has no split {split!r}: its files name no split, so they "
                "all form 'train'"
            )
        return files
    wanted = next((c for c, aliases in SPLIT_ALIASES.items() if split in aliases), split)
    if wanted not in found:
        raise DataError(
            f"directory {root} has no files of split {split!r}; it has {', '.join(sorted(found))}"
        )
    return found[wanted]


def check_local_files(source: Source, columns: list[str]) -> Source:
    """Read every parquet footer / arrow schema: a corrupt file, or one that lacks a column or
    types it differently, fails here naming the file. Returns the source without its empty
    parquet files (the streaming reader cannot read them); none left → `DataError`."""
    if source.format not in ("parquet", "arrow", SAVED_FORMAT):
        return source
    fmt = "arrow" if source.format == SAVED_FORMAT else source.format
    first: pa.Schema | None = None
    kept = []
    for path in source.files:
        schema, rows = read_schema(path, fmt)
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise DataError(
                f"{path}: no column {missing[0]!r} (the file has {', '.join(schema.names)}); "
                "fix data.modalities / data.label_columns or the file"
            )
        if first is None:
            first = schema
        for column in columns:
            a, b = first.field(column).type, schema.field(column).type
            if a != b:
                raise DataError(
                    f"{path}: column {column!r} has type {b}, but {source.files[0]} has {a}"
                )
        if rows != 0:
            kept.append(path)
    if not kept:
        raise empty_error(source)
    return replace(source, files=tuple(kept))


def empty_error(source: Source) -> DataError:
    files = f": {', '.join(source.files)}" if source.files else ""
    return DataError(f"data.source {source.name!r} (split {source.split!r}) has no rows{files}")


def read_schema(path: str, fmt: str) -> tuple[pa.Schema, int | None]:
    """The schema of one parquet or arrow file and its rows (parquet only; else None);
    `DataError` naming the file if it cannot be read."""
    try:
        if fmt == "parquet":
            metadata = pq.read_metadata(path)
            return metadata.schema.to_arrow_schema(), metadata.num_rows
        with pa.memory_map(path) as handle:
            try:
                return pa.ipc.open_stream(handle).schema, None
            except pa.ArrowInvalid:
                handle.seek(0)
                return pa.ipc.open_file(handle).schema, None
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{path}: not a readable {fmt} file ({error})") from None


def find_unreadable(source: Source) -> str | None:
    """After a read failure: the first local file that cannot be read in full (slow; only
    on the error path), with the reason."""
    for path in source.files:
        try:
            if source.format == "parquet":
                pq.read_table(path)
            elif source.format in ("arrow", SAVED_FORMAT):
                read_schema(path, "arrow")
                with pa.memory_map(path) as handle:
                    pa.ipc.open_stream(handle).read_all()
            else:
                import pyarrow.json

                pyarrow.json.read_json(path)
        except (OSError, pa.ArrowException, DataError) as error:
            return f"{path}: {error}"
    return None


def hub_offline_reason(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the Hub cannot be reached now, or None: the offline variables, or a TCP connection
    to the endpoint that fails within `timeout` seconds."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var}={os.environ[var]} is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    start = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as error:
        waited = time.perf_counter() - start
        return f"cannot connect to {host}:{port} ({error}; gave up after {waited:.1f} s)"


def check_hub(source: Source) -> None:
    """Fail within seconds, saying so, when a Hub dataset is asked for with no network."""
    reason = hub_offline_reason()
    if reason is not None:
        raise DataError(
            f"data.source {source.name!r} is not an embedded dataset or a local path, so it "
            f"would stream from the Hugging Face Hub, but there is no network: {reason}. "
            f"To train offline, {LOCAL_HINT} ({', '.join(embedded_names())})."
        )
