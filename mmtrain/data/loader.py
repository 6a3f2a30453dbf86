"""The one loading path: every source streams through Hugging Face `datasets`, is split
across ranks and loader workers, shuffled, decoded by the modality plugins and batched.

    load_dataset(..., streaming=True)          one shard per file; each shard tags its rows
      → split_dataset_by_node(rank, world)     with (shard, row) for error messages
      → shuffle(seed, buffer_size)             set_epoch(e) reshuffles shards and buffer
      → batch(read_rows), Arrow format         chunks of rows stay columnar
      → torch DataLoader workers               HF gives each worker its own shards
      → decode cells with the plugins          null cell → zeros and avail False
      → collate into `Batch`                   exactly `batch_size` rows (last may be short)

Plugins decode one cell at a time (`decode_cell`). A plugin may also offer
`decode_batch(cells) -> Tensor [k, *event_shape]` for the present cells of a chunk, given
as a list of cells or, for numeric lists of one shape, as one NumPy array `[k, ...]` (so
`np.asarray(cells)` covers both); the loader then uses it, and falls back to `decode_cell`
per cell when it raises, so that bad cells are still named by file, row and column.

Exactly once: within an epoch every row reaches exactly one (rank, worker) pair. With
`num_shards % world_size == 0` each rank reads whole shards; otherwise every rank reads all
shards in the same seeded order and keeps every `world_size`-th chunk. Loader workers then
take disjoint shards of their rank's stream.

`build_loader(config, rank, world_size)` is the entry point; the returned `BatchLoader`
yields `Batch`es and keeps per-epoch statistics (`stats`, `metrics()`).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets.distributed import split_dataset_by_node

from mmtrain.batch import Batch
from mmtrain.data.config import DataConfig, ModalitySpec
from mmtrain.data.sources import (
    SAVED_FORMAT,
    Source,
    check_hub,
    check_local_files,
    empty_error,
    find_unreadable,
    resolve_source,
)
from mmtrain.errors import ConfigError, DataError, PluginError
from mmtrain.modality import ModalityPlugin, create_modality

log = logging.getLogger("mmtrain.data")

SHARD_COLUMN = "__mmtrain_shard__"
ROW_COLUMN = "__mmtrain_row__"
MAX_NOTES = 5
CELL_ERRORS = (DataError, ValueError, TypeError, OSError)


def resolve_modalities(
    config: DataConfig, source: Source | None = None
) -> tuple[dict[str, ModalitySpec], tuple[str, ...]]:
    """The modality mapping (model order) and label columns: the config's, or the embedded
    dataset's defaults where the config leaves them out."""
    source = source or resolve_source(config)
    modalities = config.modalities or source.default_modalities()
    if not modalities:
        raise ConfigError(
            f"data.modalities is empty and {source.name!r} is not an embedded dataset with a "
            "default mapping; map columns to modalities, e.g. modalities: {image: {column: "
            "img, kind: image, options: {channels: 3, height: 32, width: 32}}}"
        )
    if config.modality_options:
        modalities = {
            name: replace(
                spec, options={**config.modality_options.get(spec.kind, {}), **spec.options}
            )
            for name, spec in modalities.items()
        }
    labels = config.label_columns
    if labels is None:
        labels = source.default_label_columns() if not config.modalities else ()
    return modalities, tuple(labels)


def build_plugins(modalities: dict[str, ModalitySpec]) -> dict[str, ModalityPlugin]:
    """One configured plugin per modality, `MODALITIES.get(kind)(**options)`; unknown kinds
    and options fail with the known ones."""
    plugins = {}
    for name, spec in modalities.items():
        try:
            plugin = create_modality(spec.kind, spec.options)
        except TypeError as error:
            raise ConfigError(
                f"data.modalities.{name}: bad options for modality kind {spec.kind!r}: {error}"
            ) from None
        except ConfigError as error:
            raise ConfigError(f"data.modalities.{name}: {error}") from None
        if getattr(type(plugin), "decode_cell", None) in (None, ModalityPlugin.decode_cell):
            raise PluginError(
                f"modality kind {spec.kind!r} does not decode dataset cells (no decode_cell); "
                "it cannot be used in data.modalities"
            )
        plugins[name] = plugin
    return plugins


@dataclass
class EpochStats:
    """What one rank's loader delivered in one epoch."""

    epoch: int
    rank: int
    batches: int = 0
    examples: int = 0
    skipped_rows: int = 0
    present: dict[str, int] = field(default_factory=dict)
    bad_rows: list[str] = field(default_factory=list)

    def presence(self) -> dict[str, float]:
        """Fraction of delivered examples in which each modality is available."""
        return {k: v / self.examples if self.examples else 0.0 for k, v in self.present.items()}


@dataclass
class LoaderItem:
    """What a loader worker sends: a batch (or None), rows skipped since its last item,
    a few bad-row messages, or the error that stopped it."""

    batch: Batch | None = None
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def pin_memory(self) -> LoaderItem:
        if self.batch is not None:
            b = self.batch
            self.batch = Batch(
                {k: v.pin_memory() for k, v in b.x.items()},
                b.avail.pin_memory(),
                None if b.labels is None else b.labels.pin_memory(),
                {k: v.pin_memory() for k, v in b.extras.items()},
            )
        return self


class Decoder:
    """Turns a columnar chunk of rows into tensors with the modality plugins (picklable, so
    it runs inside loader workers)."""

    def __init__(
        self,
        source: Source,
        modalities: dict[str, ModalitySpec],
        plugins: dict[str, ModalityPlugin],
        label_columns: tuple[str, ...],
        on_bad_row: str,
    ) -> None:
        self.source = source
        self.modalities = modalities
        self.plugins = plugins
        self.label_columns = label_columns
        self.on_bad_row = on_bad_row
        self.shapes = {name: tuple(p.event_shape) for name, p in plugins.items()}

    def where(self, shard: int, row: int, name: str) -> str:
        spec = self.modalities.get(name)
        column = spec.column if spec else name
        what = f" (modality {name!r}, {spec.kind})" if spec else " (label column)"
        return f"{self.source.shard_name(shard)}, row {row}, column {column!r}{what}"

    def decode(self, columns: dict[str, pa.Array]) -> tuple[Batch, int, list[str]]:
        """Decode one chunk; returns the good rows, the number skipped and a few notes."""
        with _one_thread():
            return self._decode(columns)

    def _decode(self, columns: dict[str, pa.Array]) -> tuple[Batch, int, list[str]]:
        shards = columns[SHARD_COLUMN].to_numpy(zero_copy_only=False)
        rows = columns[ROW_COLUMN].to_numpy(zero_copy_only=False)
        n = len(rows)
        bad = np.zeros(n, dtype=bool)
        notes: list[str] = []

        def reject(i: int, problem: str, name: str) -> None:
            message = f"{self.where(int(shards[i]), int(rows[i]), name)}: {problem}"
            if self.on_bad_row == "error":
                raise DataError(
                    f"{message}. Fix or drop the row, or set data.on_bad_row: skip to skip bad rows"
                )
            if not bad[i] and len(notes) < MAX_NOTES:
                notes.append(message)
            bad[i] = True

        x: dict[str, torch.Tensor] = {}
        avail = torch.zeros(n, len(self.modalities), dtype=torch.bool)
        for m, (name, spec) in enumerate(self.modalities.items()):
            plugin = self.plugins[name]
            shape = self.shapes[name]
            array = columns[spec.column]
            present = _valid(array)
            out = torch.zeros((n, *shape), dtype=plugin.dtype)
            index = np.flatnonzero(present)
            if len(index):
                index = self._fill(out, plugin, shape, array, index, partial(reject, name=name))
            if len(index) and out.is_floating_point():
                finite = np.isfinite(out.numpy().reshape(n, -1)).all(1)
                for i in index[~finite[index]]:
                    reject(int(i), "value is NaN or infinite", name)
            x[name] = out
            avail[:, m] = torch.as_tensor(present)
        labels = {}
        for column in self.label_columns:
            labels[column] = self._labels(columns[column], shards, rows, column)
        first = labels[self.label_columns[0]] if self.label_columns else None
        chunk = Batch(x, avail, first, labels)
        skipped = int(bad.sum())
        if skipped:
            chunk = chunk.take(torch.as_tensor(~bad))
        return chunk, skipped, notes

    @staticmethod
    def _fill(
        out: torch.Tensor,
        plugin: ModalityPlugin,
        shape: tuple[int, ...],
        array: pa.Array,
        index: np.ndarray,
        reject: Callable[[int, str], None],
    ) -> np.ndarray:
        """Decode the present cells `index` of `array` into `out`; returns the rows decoded.
        Uses the plugin's optional `decode_batch` when it has one, and falls back to
        `decode_cell` per cell (which locates the bad ones) if that fails."""
        decode_batch = getattr(plugin, "decode_batch", None)
        if decode_batch is not None:
            try:
                values = decode_batch(batch_cells(array, index))
            except CELL_ERRORS:
                values = None
            if isinstance(values, torch.Tensor) and values.shape == (len(index), *shape):
                out[torch.from_numpy(index)] = values.to(out.dtype)
                return index
        cells = arrow_cells(array)
        good, values = [], []
        for i in index.tolist():
            try:
                value = plugin.decode_cell(cells[i])
            except CELL_ERRORS as error:
                reject(i, str(error) or type(error).__name__)
                continue
            if not isinstance(value, torch.Tensor) or value.shape != shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                reject(i, f"decoded to shape {got}, expected {shape}")
                continue
            good.append(i)
            values.append(value)
        if values:
            out[torch.as_tensor(good)] = torch.stack(values).to(out.dtype)
        return np.asarray(good, dtype=np.int64)

    def _labels(
        self, array: pa.Array, shards: np.ndarray, rows: np.ndarray, column: str
    ) -> torch.Tensor:
        kind = array.type
        if pa.types.is_boolean(kind) or pa.types.is_integer(kind):
            return torch.from_numpy(np.array(pc.fill_null(array.cast(pa.int64()), -1)))
        if pa.types.is_floating(kind):
            return torch.as_tensor(array.to_numpy(zero_copy_only=False).astype(np.float32))
        if _is_numeric_list(kind):
            regular = _regular_shape(array) if array.null_count == 0 else None
            if regular is not None:
                flat, shape = regular
                return torch.from_numpy(flat.astype(np.float32).reshape(len(array), *shape))
            cells = arrow_cells(array)
            shapes = [np.shape(c) if c is not None else None for c in cells]
            shape = next((s for s in shapes if s is not None), (0,))
            for i, other in enumerate(shapes):
                if other is not None and other != shape:
                    raise DataError(
                        f"{self.where(int(shards[i]), int(rows[i]), column)}: label cell of "
                        f"shape {other}, but earlier cells have shape {shape}"
                    )
            out = np.full((len(cells), *shape), np.nan, dtype=np.float32)
            for i, cell in enumerate(cells):
                if cell is not None:
                    out[i] = cell
            return torch.as_tensor(out)
        raise DataError(
            f"{self.where(int(shards[0]), int(rows[0]), column)}: label columns must hold "
            f"numbers or lists of numbers, this one holds {kind}"
        )


@contextmanager
def _one_thread() -> Iterator[None]:
    """Assemble small tensors on one thread: intra-op threads only add contention there
    (loader workers already run on one; this covers `num_workers: 0`)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _valid(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    return array.is_valid().to_numpy(zero_copy_only=False)


def _is_numeric_list(kind: pa.DataType) -> bool:
    while (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    ):
        kind = kind.value_type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            return True
    return False


def batch_cells(array: pa.Array, index: np.ndarray) -> list[object] | np.ndarray:
    """The cells `index` of a column for `decode_batch`: one NumPy array `[k, ...]` when they
    are numeric lists of one shape (no per-cell objects at all), else a list of cells as
    `arrow_cells` gives them."""
    if _is_numeric_list(array.type):
        chosen = array if len(index) == len(array) else array.take(pa.array(index))
        regular = _regular_shape(chosen)
        if regular is not None:
            flat, inner = regular
            return flat.reshape(len(index), *inner).copy()
    cells = arrow_cells(array)
    return [cells[i] for i in index]


def arrow_cells(array: pa.Array) -> list[object]:
    """The cells of an Arrow column as the plugins take them: numeric (nested) lists as NumPy
    arrays (sliced without copying through Python), everything else as Python objects (str,
    int, Hugging Face Image dicts `{"bytes", "path"}`, …); nulls as None."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if _is_numeric_list(array.type) and array.null_count == 0:
        cells = _numeric_list_cells(array)
        if cells is not None:
            return cells
    if _is_numeric_list(array.type):
        valid = _valid(array)
        if valid.any():
            dense = _numeric_list_cells(pc.drop_null(array))
            if dense is not None:
                it = iter(dense)
                return [next(it) if ok else None for ok in valid]
    return array.to_pylist()


def _numeric_list_cells(array: pa.Array) -> list[np.ndarray] | None:
    """Rows of a null-free list column as NumPy views of one copied buffer; None when
    ragged inside or with nulls among the values (the plugins then see Python lists)."""
    values = array.flatten()
    inner_shape: tuple[int, ...] = ()
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        if values.null_count:
            return None
        flat = values.to_numpy(zero_copy_only=False)
    else:
        inner = _regular_shape(values)
        if inner is None:
            return None
        flat, inner_shape = inner
    flat = flat.copy()
    if hasattr(array, "offsets"):
        offsets = array.offsets.to_numpy()
        offsets = offsets - offsets[0]
    else:
        offsets = np.arange(len(array) + 1) * array.type.list_size
    if not inner_shape:
        return [flat[offsets[i] : offsets[i + 1]] for i in range(len(array))]
    step = int(np.prod(inner_shape))
    return [
        flat[offsets[i] * step : offsets[i + 1] * step].reshape(-1, *inner_shape)
        for i in range(len(array))
    ]


def _regular_shape(values: pa.Array) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """A list column whose rows all have one length, flattened: (values, (length, ...))."""
    if not _is_numeric_list(values.type) or values.null_count:
        return None
    lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
    if len(lengths) == 0 or (lengths != lengths[0]).any():
        return None
    inner = values.flatten()
    if pa.types.is_integer(inner.type) or pa.types.is_floating(inner.type):
        if inner.null_count:
            return None
        return inner.to_numpy(zero_copy_only=False), (int(lengths[0]),)
    deeper = _regular_shape(inner)
    if deeper is None:
        return None
    return deeper[0], (int(lengths[0]), *deeper[1])


def read_error(source: Source, error: Exception) -> DataError:
    """A read failure of the streaming reader as a `DataError` naming the unreadable file."""
    culprit = find_unreadable(source)
    if culprit is not None:
        return DataError(f"cannot read {culprit}")
    return DataError(f"cannot read {source.name}: {type(error).__name__}: {error}")


def _tag_rows(table: pa.Table, indices: list[int], shard: int) -> pa.Table:
    n = table.num_rows
    return table.append_column(
        SHARD_COLUMN, pa.array(np.full(n, shard, dtype=np.int32))
    ).append_column(ROW_COLUMN, pa.array(np.asarray(indices, dtype=np.int64)))


def load_base(source: Source, columns: list[str] | None = None) -> datasets.IterableDataset:
    """`datasets.load_dataset(..., streaming=True)` on the source, reduced to `columns` (all
    when None). Fails naming the file or column at fault, or saying there is no network."""
    if source.kind == "hub":
        check_hub(source)
        try:
            base = datasets.load_dataset(
                source.name,
                source.hub_config,
                split=source.split,
                streaming=True,
                revision=source.hub_revision,
            )
        except Exception as error:  # noqa: BLE001 - the Hub raises many kinds
            raise DataError(
                f"cannot stream {source.name!r} (split {source.split!r}) from the Hugging Face "
                f"Hub: {type(error).__name__}: {error}"
            ) from None
    elif source.format == SAVED_FORMAT:
        try:
            # One shard per Arrow file: save_to_disk cut the rows into contiguous shards of
            # equal size, and to_iterable_dataset cuts them the same way.
            saved = datasets.load_from_disk(source.directory)
            base = saved.to_iterable_dataset(num_shards=max(1, min(len(source.files), len(saved))))
        except Exception as error:  # noqa: BLE001 - Arrow and datasets raise many kinds
            raise read_error(source, error) from None
    else:
        kwargs = {"columns": columns} if source.format == "parquet" and columns else {}
        try:
            base = datasets.load_dataset(
                source.format,
                data_files={source.split: list(source.files)},
                split=source.split,
                streaming=True,
                **kwargs,
            )
        except Exception as error:  # noqa: BLE001 - builders raise many kinds
            raise read_error(source, error) from None
    features = base.features
    if features is None:
        raise DataError(f"cannot infer the columns of {source.name!r}; is it empty?")
    if columns is None:
        return base
    missing = [c for c in columns if c not in features]
    if missing:
        where = source.files[0] if source.files else source.name
        raise DataError(
            f"{where}: no column {missing[0]!r} (the dataset has {', '.join(features)}); fix "
            "data.modalities / data.label_columns"
        )
    if list(features) != columns:
        base = base.select_columns(columns)
    return base


def tag_rows(base: datasets.IterableDataset) -> datasets.IterableDataset:
    """Each shard (file) of `base` with two more columns, its shard and row index, so a bad
    cell can be named by file and row wherever it surfaces."""
    tagged = datasets.Features(
        {
            **base.features,
            SHARD_COLUMN: datasets.Value("int32"),
            ROW_COLUMN: datasets.Value("int64"),
        }
    )
    n = base.num_shards
    parts = [
        base.shard(num_shards=n, index=i, contiguous=True)
        .with_format("arrow")
        .map(_tag_rows, batched=True, with_indices=True, fn_kwargs={"shard": i}, features=tagged)
        for i in range(n)
    ]
    return datasets.concatenate_datasets(parts) if n > 1 else parts[0]


def open_stream(
    base: datasets.IterableDataset, config: DataConfig, rank: int, world_size: int
) -> datasets.IterableDataset:
    """The rank's stream of Arrow chunks of tagged rows (`config.read_rows` each, or at most
    `max(batch_size, 64)` when ranks share shards, so that they get near-equal shares)."""
    rows = split_dataset_by_node(tag_rows(base), rank=rank, world_size=world_size)
    chunk = config.read_rows
    if world_size > 1 and base.num_shards % world_size:
        chunk = min(chunk, max(config.batch_size, 64))
        if rank == 0:
            log.info(
                "%d shards do not divide among %d ranks: every rank reads every shard and "
                "keeps every %d-th chunk of %d rows; a shard count divisible by the world "
                "size reads less",
                base.num_shards,
                world_size,
                world_size,
                chunk,
            )
    if config.shuffle:
        rows = rows.shuffle(
            seed=config.seed,
            buffer_size=config.shuffle_buffer,
            max_buffer_input_shards=config.interleave_shards,
        )
    return rows.batch(chunk).with_format("arrow")


def check_presence(
    base: datasets.IterableDataset,
    source: Source,
    modalities: dict[str, ModalitySpec],
    config: DataConfig,
) -> dict[str, float]:
    """Read up to `config.presence_check_rows` rows in file order; an empty dataset, or a
    modality null in every row read, raises `DataError`. Returns presence fractions."""
    if config.presence_check_rows == 0:
        return {}
    seen = 0
    counts = dict.fromkeys(modalities, 0)
    size = min(4096, config.presence_check_rows)
    try:
        for table in base.with_format("arrow").iter(batch_size=size):
            for name, spec in modalities.items():
                column = table.column(spec.column)
                counts[name] += len(column) - column.null_count
            seen += table.num_rows
            if seen >= config.presence_check_rows:
                break
    except (OSError, pa.ArrowException) as error:
        raise read_error(source, error) from None
    if seen == 0:
        raise empty_error(source)
    absent = [name for name, count in counts.items() if count == 0]
    if absent:
        name = absent[0]
        scope = (
            f"all {seen} rows" if seen < config.presence_check_rows else f"the first {seen} rows"
        )
        hint = (
            ""
            if seen < config.presence_check_rows
            else "; if it appears further on, raise data.presence_check_rows (0 skips this check)"
        )
        raise DataError(
            f"modality {name!r} (column {modalities[name].column!r}) is null in {scope} of "
            f"{source.name!r} (split {source.split!r}); a modality that is never present "
            f"cannot be trained: drop it from data.modalities or fix the data{hint}"
        )
    return {name: count / seen for name, count in counts.items()}


class BatchStream(torch.utils.data.IterableDataset):
    """A rank's `LoaderItem`s: Arrow chunks from the streaming dataset, decoded and cut into
    batches of `batch_size` rows. Loader workers each get their own shards."""

    def __init__(
        self,
        rows: datasets.IterableDataset,
        decoder: Decoder,
        batch_size: int,
        drop_last: bool,
    ) -> None:
        super().__init__()
        self.rows = rows
        self.decoder = decoder
        self.batch_size = batch_size
        self.drop_last = drop_last

    def set_epoch(self, epoch: int) -> None:
        self.rows.set_epoch(epoch)

    def __iter__(self) -> Iterator[LoaderItem]:
        try:
            yield from self._items()
        except DataError as error:
            yield LoaderItem(error=str(error))
        except (OSError, ValueError, pa.ArrowException) as error:
            yield LoaderItem(error=str(read_error(self.decoder.source, error)))

    def _items(self) -> Iterator[LoaderItem]:
        """Decode each Arrow chunk a batch of rows at a time (decoded tensors never exceed
        about two batches) and cut the rows into batches of exactly `batch_size`."""
        pending: list[Batch] = []
        pending_rows = 0
        skipped, notes = 0, []
        for table in self.rows:
            columns = {name: _unwrap(table.column(name)) for name in table.column_names}
            rows = len(columns[ROW_COLUMN])
            for start in range(0, rows, self.batch_size):
                part = {k: v.slice(start, self.batch_size) for k, v in columns.items()}
                chunk, bad, new_notes = self.decoder.decode(part)
                skipped += bad
                notes += new_notes[: MAX_NOTES - len(notes)]
                if chunk.size:
                    pending.append(chunk)
                    pending_rows += chunk.size
            if pending_rows < self.batch_size:
                continue
            with _one_thread():
                merged = Batch.cat(pending)
            full = pending_rows // self.batch_size * self.batch_size
            for start in range(0, full, self.batch_size):
                batch = merged.take(slice(start, start + self.batch_size))
                yield LoaderItem(batch, skipped, notes)
                skipped, notes = 0, []
            pending = [merged.take(slice(full, None))] if full < pending_rows else []
            pending_rows -= full
        if pending_rows and not self.drop_last:
            with _one_thread():
                last = Batch.cat(pending)
            yield LoaderItem(last, skipped, notes)
            skipped, notes = 0, []
        if skipped or notes:
            yield LoaderItem(None, skipped, notes)


def _unwrap(column: pa.ChunkedArray) -> pa.Array:
    """The rows inside a one-row chunk of `IterableDataset.batch`."""
    return column.combine_chunks().flatten()


def _identity(item: LoaderItem) -> LoaderItem:
    return item


def _ignore_interrupts(worker_id: int) -> None:
    """Loader workers ignore Ctrl-C (a terminal sends it to the whole process group): the
    training process decides when to stop, and it still needs the batch being loaded."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class BatchLoader:
    """Iterable of `Batch` for one rank, over a PyTorch `DataLoader` with workers.

    Call `set_epoch(epoch)` before each epoch (it reseeds the shard order and shuffle
    buffer); iterate to get `Batch`es whose `x` follows `modality_names` and whose `avail`
    is `[B, M]` in the same order. `stats` describes the epoch under way (or last finished),
    `history` every finished epoch, `metrics()` gives loggable numbers. The loader is
    already split by rank: do not pass it (or its `dataloader`) to `accelerator.prepare`.
    """

    def __init__(
        self,
        config: DataConfig,
        source: Source,
        base: datasets.IterableDataset,
        modalities: dict[str, ModalitySpec],
        plugins: dict[str, ModalityPlugin],
        label_columns: tuple[str, ...],
        rank: int,
        world_size: int,
        epoch: int,
        presence: dict[str, float],
    ) -> None:
        self.config = config
        self.source = source
        self.modalities = modalities
        self.plugins = plugins
        self.label_columns = label_columns
        self.rank = rank
        self.world_size = world_size
        self.initial_presence = presence
        decoder = Decoder(source, modalities, plugins, label_columns, config.on_bad_row)
        if config.in_memory:
            # Every rank reads the whole split once, in file order; epochs are then drawn
            # from memory (`_memory_items`) and split between ranks there.
            rows = open_stream(base, config.replace(shuffle=False), 0, 1)
            self.stream = BatchStream(rows, decoder, config.read_rows, False)
        else:
            rows = open_stream(base, config, rank, world_size)
            self.stream = BatchStream(rows, decoder, config.batch_size, config.drop_last)
        self.memory: Batch | None = None
        workers = 0 if config.in_memory else config.num_workers
        self.dataloader: torch.utils.data.DataLoader = torch.utils.data.DataLoader(
            self.stream,
            batch_size=None,
            num_workers=workers,
            collate_fn=_identity,
            persistent_workers=workers > 0 and config.persistent_workers,
            prefetch_factor=config.prefetch_factor if workers else None,
            pin_memory=config.pin_memory,
            worker_init_fn=_ignore_interrupts if workers else None,
        )
        self.epoch = epoch
        self.stream.set_epoch(epoch)
        self.stats = EpochStats(epoch, rank)
        self.history: list[EpochStats] = []

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    @property
    def event_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(p.event_shape) for name, p in self.plugins.items()}

    @property
    def num_rows(self) -> int | None:
        """Rows in the whole split (all ranks) when known without reading it."""
        return self.source.known_rows()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shard order and shuffle seed (the same on every rank)."""
        self.epoch = epoch
        self.stream.set_epoch(epoch)

    def __iter__(self) -> Iterator[Batch]:
        stats = EpochStats(self.epoch, self.rank, present=dict.fromkeys(self.modalities, 0))
        self.stats = stats
        items = self._memory_items() if self.config.in_memory else self.dataloader
        for item in items:
            if item.error is not None:
                raise DataError(item.error)
            stats.skipped_rows += item.skipped
            stats.bad_rows += item.notes[: MAX_NOTES - len(stats.bad_rows)]
            if item.batch is None:
                continue
            batch = item.batch
            stats.batches += 1
            stats.examples += batch.size
            for name, count in zip(self.modalities, batch.avail.sum(0).tolist()):
                stats.present[name] += int(count)
            yield batch
        if stats.examples == 0:
            raise DataError(
                f"rank {self.rank} of {self.world_size} received no examples from "
                f"{self.source.name!r} (split {self.source.split!r}) in epoch {self.epoch}"
                + (f"; all {stats.skipped_rows} rows read were bad" if stats.skipped_rows else "")
                + (f"; first: {stats.bad_rows[0]}" if stats.bad_rows else "")
            )
        self.history.append(stats)
        absent = [name for name, count in stats.present.items() if count == 0]
        if absent:
            log.warning(
                "epoch %d, rank %d: modalities %s were never present in %d examples",
                stats.epoch,
                stats.rank,
                absent,
                stats.examples,
            )
        if stats.skipped_rows:
            log.warning(
                "epoch %d, rank %d: skipped %d bad rows of %s (first: %s)",
                stats.epoch,
                stats.rank,
                stats.skipped_rows,
                self.source.name,
                stats.bad_rows[0] if stats.bad_rows else "?",
            )

    def _memory_items(self) -> Iterator[LoaderItem]:
        """An epoch drawn from the rows in memory (`data.in_memory`): a permutation seeded
        by (data.seed, epoch), the same on every rank; rank r takes every world-th row of
        it, cut into batches of `batch_size` (the remainder dropped with `drop_last`). The
        first epoch also reports the rows skipped while reading."""
        skipped, notes = 0, []
        if self.memory is None:
            parts = []
            for item in self.dataloader:
                if item.error is not None:
                    raise DataError(item.error)
                skipped += item.skipped
                notes += item.notes
                if item.batch is not None:
                    parts.append(item.batch)
            if not parts:
                yield LoaderItem(None, skipped, notes)
                return
            self.memory = Batch.cat(parts)
        seed = np.random.SeedSequence([self.config.seed, self.epoch]).generate_state(1)[0]
        order = torch.randperm(self.memory.size, generator=torch.Generator().manual_seed(int(seed)))
        mine = order[self.rank :: self.world_size]
        size = self.config.batch_size
        end = len(mine) - len(mine) % size if self.config.drop_last else len(mine)
        for start in range(0, end, size):
            yield LoaderItem(self.memory.take(mine[start : start + size]), skipped, notes)
            skipped, notes = 0, []
        if skipped or notes:
            yield LoaderItem(None, skipped, notes)

    def metrics(self) -> dict[str, float]:
        """Numbers to log for the current (or last) epoch under `data/`."""
        s = self.stats
        out = {
            "data/epoch": float(s.epoch),
            "data/batches": float(s.batches),
            "data/examples": float(s.examples),
            "data/skipped_rows": float(s.skipped_rows),
        }
        out |= {f"data/presence/{k}": v for k, v in s.presence().items()}
        return out


def build_loader(
    config: DataConfig, rank: int = 0, world_size: int = 1, epoch: int = 0
) -> BatchLoader:
    """The `BatchLoader` of one rank: resolves the source (generating embedded data on first
    use), builds the modality plugins, checks schema and presence before any training, and
    wires the streaming pipeline into a `DataLoader` with `config.num_workers` workers."""
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in [0, {world_size}), got {rank}")
    source = resolve_source(config)
    modalities, label_columns = resolve_modalities(config, source)
    plugins = build_plugins(modalities)
    columns = [spec.column for spec in modalities.values()]
    columns += [c for c in label_columns if c not in columns]
    source = check_local_files(source, columns)
    base = load_base(source, columns)
    presence = check_presence(base, source, modalities, config)
    return BatchLoader(
        config, source, base, modalities, plugins, label_columns, rank, world_size, epoch, presence
    )
