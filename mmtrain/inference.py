"""Using a trained model from Python: `model = mmtrain.load(PATH)` returns an `InferenceModel`.

    mmtrain.load(run dir | checkpoint | bundle | "hf://ORG/NAME")   `bundle.resolve_model`
      → rows (dataset rows or columns of raw cells: PNG bytes, PIL images, strings, lists)
      → the modality plugins decode the cells    `decode_batch` / `decode_cells`
      → encode, reconstruct, generate, sample, log_likelihood
      → tensors on the CPU; `preview` turns them into PIL images and strings

Every method runs in batches of `batch_size` rows on the model's device under
`torch.no_grad()`. A row may lack any modality (a missing key or a None cell); `given`
restricts the conditioning set S further, so `encode(rows, given=["mnist"])` is q(z | x_S)
with S = {mnist} ∩ observed (paper §2, docs/math.md §1.4, §3.8). Log-likelihoods are the
importance-sampled estimates of docs/math.md §4.4 (`objectives.importance_sampling`, which
`mmtrain eval` uses too).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mmtrain.batch import Batch
from mmtrain.bundle import ModelSource, build_and_load, resolve_model
from mmtrain.errors import ConfigError, DataError, did_you_mean
from mmtrain.modality import ModalityPlugin
from mmtrain.model import MultiModalVAE
from mmtrain.objectives import ImportanceEstimate, importance_sampling

if TYPE_CHECKING:
    from mmtrain.config import TrainConfig

#: dataset rows (mappings of column → cell), or columns (a mapping of column → cells), or an
#: already decoded `Batch`
Rows = Iterable[Mapping[str, Any]] | Mapping[str, Sequence[Any]] | Batch
#: errors a plugin raises for a bad cell
_CELL_ERRORS = (DataError, ValueError, TypeError, OSError)


@dataclass
class Posterior:
    """q(z | x_S) of each row: its mean `[N, d]` and, when asked for, reparameterised draws
    `[K, N, d]`."""

    mean: Tensor
    samples: Tensor | None = None


def load(path: str | Path, device: str | torch.device = "cpu") -> InferenceModel:
    """The trained model at `path` (an exported bundle, a checkpoint, a run directory: its
    `checkpoints/best` when training kept one, else its newest checkpoint, or a bundle on
    the Hub, `"hf://ORG/NAME[@REVISION]"`), on `device`, ready for inference."""
    source = resolve_model(path)
    return InferenceModel(build_and_load(source, str(device)), source)


class InferenceModel:
    """A trained `MultiModalVAE` (`.model`) with the config it was trained with (`.config`)
    and where it came from (`.source`), working on raw dataset rows."""

    def __init__(self, model: MultiModalVAE, source: ModelSource) -> None:
        from mmtrain.config import config_from_dict

        self.model = model.eval()
        self.source = source
        self.config: TrainConfig = config_from_dict(source.description["config"])
        self._columns = {spec.column: name for name, spec in self.config.data.modalities.items()}

    def __repr__(self) -> str:
        step = f", step {self.source.step}" if self.source.step is not None else ""
        return (
            f"InferenceModel({self.config.model.aggregator} + {self.config.model.objective}, "
            f"modalities {self.modality_names}, latent {self.latent_dim}{step})"
        )

    # ------------------------------------------------------------------ what it is

    @property
    def modality_names(self) -> list[str]:
        return list(self.model.modality_names)

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def plugin(self, name: str) -> ModalityPlugin:
        """The modality plugin that decodes and previews modality `name`."""
        plugin = self.model.modalities[self._modality(name)].plugin
        if plugin is None:
            raise ConfigError(f"modality {name!r} was not built by a plugin")
        return plugin

    # ------------------------------------------------------------------ rows → tensors

    def to_batch(self, rows: Rows) -> Batch:
        """Raw rows → a `Batch` on the CPU: each modality's cells decoded by its plugin, keyed
        by modality name (or by the training config's column name); a missing key or a None
        cell marks the modality missing in that row. Other keys (labels) are ignored."""
        if isinstance(rows, Batch):
            return rows
        records = _records(rows)
        if not records:
            raise DataError("no rows given")
        names = self.modality_names
        keys = {name: self._key(records, name) for name in names}
        if all(key is None for key in keys.values()):
            raise DataError(
                f"the rows hold none of the model's modalities {names}; "
                f"their keys are {sorted(records[0])}"
            )
        x, avail = {}, torch.zeros(len(records), len(names), dtype=torch.bool)
        for index, name in enumerate(names):
            plugin = self.plugin(name)
            cells = [None if keys[name] is None else row.get(keys[name]) for row in records]
            present = [i for i, cell in enumerate(cells) if cell is not None]
            values = torch.zeros((len(records), *plugin.event_shape), dtype=plugin.dtype)
            if present:
                values[present] = _decode(plugin, name, [cells[i] for i in present], present)
            x[name] = values
            avail[:, index] = torch.tensor([cell is not None for cell in cells])
        return Batch(x, avail)

    def _key(self, records: list[Mapping[str, Any]], name: str) -> str | None:
        """The key holding modality `name` in the rows: its name, else its column."""
        column = next((c for c, n in self._columns.items() if n == name), None)
        for key in (name, column):
            if key is not None and any(key in row for row in records):
                return key
        return None

    def _modality(self, name: str) -> str:
        if name not in self.model.modality_names:
            known = self.modality_names
            raise ConfigError(
                f"unknown modality {name!r}{did_you_mean(name, known)} Known: {', '.join(known)}"
            )
        return name

    def _mask(self, given: Sequence[str] | None, batch: Batch) -> Tensor:
        """The conditioning set S per row: `given` (default: all) ∩ observed."""
        if given is None:
            return batch.avail.bool()
        if isinstance(given, str):
            given = [given]
        chosen = {self._modality(name) for name in given}
        wanted = torch.tensor([name in chosen for name in self.modality_names])
        return batch.avail.bool() & wanted.to(batch.avail.device)

    def _pieces(self, rows: Rows, batch_size: int) -> Iterator[Batch]:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        batch = self.to_batch(rows)
        for _, piece in batch.chunks(batch_size):
            yield piece.to(self.device)

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def encode(
        self,
        rows: Rows,
        given: Sequence[str] | None = None,
        samples: int = 0,
        batch_size: int = 256,
    ) -> Posterior:
        """q(z | x_S) per row with S = `given` ∩ observed (default: everything observed): its
        mean `[N, d]` and `samples` draws `[K, N, d]` (none by default)."""
        means, draws = [], []
        for piece in self._pieces(rows, batch_size):
            q = self.model.encode(piece, self._mask(given, piece))
            means.append(q.mean.cpu())
            if samples:
                draws.append(q.rsample(samples).cpu())
        return Posterior(torch.cat(means), torch.cat(draws, dim=1) if samples else None)

    @torch.no_grad()
    def generate(
        self,
        rows: Rows,
        given: Sequence[str] | None = None,
        targets: Sequence[str] | None = None,
        sample: bool = True,
        batch_size: int = 256,
    ) -> dict[str, Tensor]:
        """Cross-generation: the decoder means of `targets` (default: every modality) from
        z ~ q(z | x_S), one draw per row (`sample=False`: the posterior mean), S = `given` ∩
        observed; `{name: [N, *event]}`."""
        names = self.modality_names if targets is None else [self._modality(t) for t in targets]
        out: dict[str, list[Tensor]] = {name: [] for name in names}
        for piece in self._pieces(rows, batch_size):
            q = self.model.encode(piece, self._mask(given, piece))
            z = q.rsample(1)[0] if sample else q.mean
            for name, value in self._decoder_means(z, names).items():
                out[name].append(value.cpu())
        return {name: torch.cat(values) for name, values in out.items()}

    def reconstruct(
        self, rows: Rows, sample: bool = False, batch_size: int = 256
    ) -> dict[str, Tensor]:
        """Every modality decoded from q(z | x_obs) of each row: the decoder means at the
        posterior mean (`sample=True`: at one draw); `{name: [N, *event]}`."""
        return self.generate(rows, None, None, sample, batch_size)

    @torch.no_grad()
    def sample(self, n: int, batch_size: int = 256) -> dict[str, Tensor]:
        """Decoder means of `n` prior draws z ~ p(z), one draw shared by all modalities of a
        sample; `{name: [n, *event]}`."""
        if n < 1 or batch_size < 1:
            raise ConfigError("sample needs n ≥ 1 and batch_size ≥ 1")
        out: dict[str, list[Tensor]] = {name: [] for name in self.modality_names}
        for start in range(0, n, batch_size):
            z = self.model.prior.sample(min(batch_size, n - start)).to(self.device)
            for name, value in self._decoder_means(z, self.modality_names).items():
                out[name].append(value.cpu())
        return {name: torch.cat(values) for name, values in out.items()}

    @torch.no_grad()
    def log_likelihood(
        self,
        rows: Rows,
        samples: int = 100,
        modalities: Sequence[str] | None = None,
        batch_size: int = 256,
        chunk_size: int = 64,
    ) -> ImportanceEstimate:
        """Per-row importance-sampled log p̂(x_S) with proposal q(z | x_S) and its Monte-Carlo
        standard error (`.log_likelihood`, `.stderr`, `[N]` each; docs/math.md §4.4), S =
        `modalities` ∩ observed (default: everything observed). A row observing none of S
        has log p̂ = 0 exactly."""
        if samples < 1 or chunk_size < 1:
            raise ConfigError("log_likelihood needs samples ≥ 1 and chunk_size ≥ 1")
        names = None if modalities is None else [self._modality(m) for m in modalities]
        values, errors = [], []
        for piece in self._pieces(rows, batch_size):
            mask = self._mask(names, piece)
            estimate = importance_sampling(
                self.model, Batch(piece.x, mask), samples, chunk_size=chunk_size, modalities=names
            )
            values.append(estimate.log_likelihood.cpu())
            errors.append(estimate.stderr.cpu())
        return ImportanceEstimate(torch.cat(values), torch.cat(errors))

    def preview(self, outputs: Mapping[str, Tensor] | Batch) -> dict[str, list[Any]]:
        """Each row of each modality shown to a person by its plugin: a PIL image (images)
        or a string (text, labels, vectors); `{name: [preview of row 0, row 1, …]}`. Takes
        what `generate`, `reconstruct` and `sample` return, or a decoded `Batch`."""
        values = outputs.x if isinstance(outputs, Batch) else outputs
        return {
            name: [self.plugin(name).preview(row) for row in tensor.detach().cpu()]
            for name, tensor in values.items()
        }

    def _decoder_means(self, z: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        modalities = self.model.modalities
        return {
            name: modalities[name].likelihood.mean(modalities[name].decode(z)) for name in names
        }


def _records(rows: Rows) -> list[Mapping[str, Any]]:
    """Rows as a list of mappings, from rows or from columns of equal length."""
    if isinstance(rows, Mapping):
        lengths = {key: len(cells) for key, cells in rows.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"columns of different lengths: {lengths}")
        count = next(iter(lengths.values()), 0)
        return [{key: cells[i] for key, cells in rows.items()} for i in range(count)]
    records = list(rows)
    for index, row in enumerate(records):
        if not isinstance(row, Mapping):
            raise DataError(
                f"row {index} is a {type(row).__name__}; give rows as mappings of column → "
                "cell (dataset rows), or one mapping of column → cells"
            )
    return records


def _decode(plugin: ModalityPlugin, name: str, cells: list[Any], rows: list[int]) -> Tensor:
    """The present cells of one modality, `[k, *event]`: the plugin's `decode_batch` when it
    has one, else (or when it fails) cell by cell, so that a bad cell is named by its row."""
    shape = tuple(plugin.event_shape)
    decode_batch = getattr(plugin, "decode_batch", None)
    if decode_batch is not None:
        try:
            values = decode_batch(cells)
        except _CELL_ERRORS:
            values = None
        if isinstance(values, Tensor) and tuple(values.shape) == (len(cells), *shape):
            return _finite(values, name, rows)
    decoded = []
    for row, cell in zip(rows, cells):
        try:
            decoded.append(plugin.decode_cells([cell])[0])
        except _CELL_ERRORS as error:
            raise DataError(f"row {row}, modality {name!r} ({plugin.kind}): {error}") from None
    return _finite(torch.stack(decoded), name, rows)


def _finite(values: Tensor, name: str, rows: list[int]) -> Tensor:
    if values.is_floating_point():
        bad = ~torch.isfinite(values.reshape(len(rows), -1)).all(1)
        if bool(bad.any()):
            row = rows[int(bad.nonzero()[0])]
            raise DataError(f"row {row}, modality {name!r}: value is NaN or infinite")
    return values
