"""A modality as the model sees it (`Modality`), and the plugin interface that builds one and
turns dataset cells into tensors (`ModalityPlugin`).

Plugins are dataclasses whose fields are their options, declared with `option(default, doc)`.
That choice gives, with no extra code per plugin: construction from keyword options
(`MODALITIES.get(kind)(**options)`), type checks with readable `ConfigError`s, JSON-safe
`options()` that rebuild the plugin, and the option table of `mmtrain plugins info`.

The networks come from `build_likelihood()`, `build_encoder(F)` and `build_decoder(d, P)`,
which the shared `build(F, d)` assembles. The `build_` prefix keeps `likelihood`, `encoder`
and `decoder` free as option names (`vector` has `likelihood="laplace"`, `decoder="linear"`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmtrain.errors import DataError
from mmtrain.likelihoods import Likelihood
from mmtrain.schema import check_keys, convert_fields


class Modality(nn.Module):
    """Encoder `x [B, *event] → h [B, F]`, decoder `z [..., B, d] → params [..., B, P]`, and
    the likelihood `log_prob(params, x) → [..., B]`.

    `plugin` is the `ModalityPlugin` that built it (its kind and options rebuild it), or None
    for hand-built modalities.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        plugin: ModalityPlugin | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.plugin = plugin

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.likelihood.event_shape

    @property
    def kind(self) -> str | None:
        """The registry name of the plugin that built this modality."""
        return None if self.plugin is None else self.plugin.kind

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return self.likelihood.log_prob(params, x)


def option(default: Any, doc: str, *, choices: tuple[Any, ...] | None = None) -> Any:
    """Declare a plugin option: its default, one line of documentation, allowed values."""
    return dataclasses.field(default=default, metadata={"doc": doc, "choices": choices})


@dataclasses.dataclass
class ModalityPlugin:
    """A kind of modality (vector, image, text, label, …), configured by keyword options.

    Subclasses are `@dataclass`es registered in `mmtrain.registry.MODALITIES` under their
    `kind`, with every field declared by `option(...)`. They implement:

    - `event_shape`: the shape of one example, without the batch axis;
    - `decode_cell(cell)`: one dataset cell → a tensor of `event_shape`, or `DataError`;
    - optionally `decode_batch(cells)`: the present cells of a chunk at once (see below);
    - `build_likelihood()`, `build_encoder(feature_dim)` (`[B, *event] → [B, F]`) and
      `build_decoder(latent_dim, num_params)` (`[..., B, d] → [..., B, P]`, any leading
      sample axes), which `build(feature_dim, latent_dim)` assembles into a `Modality`;
    - `preview(x)`: a PIL image or a string showing one example (or a batch, or a decoder
      mean) to a person.

    `validate()` may check option combinations and raise `ConfigError`.

    `decode_batch(cells) -> Tensor [k, *event_shape]` is optional and not defined here: the
    data loader uses it when `getattr(plugin, "decode_batch", None)` is not None (a subclass
    turns it off with `decode_batch = None`), and decodes cell by cell otherwise. `cells` are
    the present (non-null) cells of one chunk of rows, either a list of cells as
    `decode_cell` takes them or, when they are numeric lists of one shape, one NumPy array
    `[k, ...]` whose rows are the cells. The result must equal `decode_cells(cells)`, bit for
    bit in `dtype`. If any cell is bad it raises `DataError` (or `ValueError`, `TypeError`,
    `OSError`) and need not say which: the loader then decodes that chunk cell by cell, so
    that bad rows are named and skipped exactly as without `decode_batch`. Cells its fast
    path does not cover can go through `decode_cells`.
    """

    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        convert_fields(self, lambda name: f"{self.kind or type(self).__name__} option {name!r}")
        self.validate()

    def validate(self) -> None:
        """Check option combinations; raise `ConfigError` naming the option and the fix."""

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one example of this modality (without the batch axis)."""
        raise NotImplementedError

    @property
    def event_size(self) -> int:
        return math.prod(self.event_shape)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype `decode_cell` returns."""
        return torch.float32

    def decode_cell(self, cell: object) -> Tensor:
        """One dataset cell → a tensor of `event_shape`; a bad cell raises `DataError`."""
        raise NotImplementedError

    def decode_cells(self, cells: Iterable[object]) -> Tensor:
        """`decode_cell` of each cell, stacked to `[k, *event_shape]`: what `decode_batch`
        must return. A cell that decodes to another shape raises `DataError`."""
        shape = tuple(self.event_shape)
        values = [self.decode_cell(cell) for cell in cells]
        for value in values:
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise DataError(f"decoded to shape {got}, expected {shape}")
        if not values:
            return torch.zeros((0, *shape), dtype=self.dtype)
        return torch.stack(values)

    def build_likelihood(self) -> Likelihood:
        """A fresh likelihood module p(x | params) for this modality."""
        raise NotImplementedError

    def build_encoder(self, feature_dim: int) -> nn.Module:
        """A fresh encoder `x [B, *event] → h [B, feature_dim]`."""
        raise NotImplementedError

    def build_decoder(self, latent_dim: int, num_params: int) -> nn.Module:
        """A fresh decoder `z [..., B, latent_dim] → params [..., B, num_params]`."""
        raise NotImplementedError

    def build(self, feature_dim: int, latent_dim: int) -> Modality:
        """The likelihood, encoder (→ `feature_dim`) and decoder (from `latent_dim`)."""
        likelihood = self.build_likelihood()
        encoder = self.build_encoder(feature_dim)
        decoder = self.build_decoder(latent_dim, likelihood.num_params)
        return Modality(encoder, decoder, likelihood, plugin=self)

    def preview(self, x: Tensor) -> object:
        """A PIL image or a string that shows one example (or decoder mean) to a person."""
        raise NotImplementedError

    def options(self) -> dict[str, object]:
        """The JSON-safe options that rebuild this plugin: `type(self)(**options)`."""
        return {spec.name: _jsonable(getattr(self, spec.name)) for spec in dataclasses.fields(self)}


def create_modality(kind: str, options: dict[str, object] | None = None) -> ModalityPlugin:
    """The plugin registered as `kind`, configured by `options`; unknown options raise
    `ConfigError` with the known ones and the closest match."""
    from mmtrain.registry import MODALITIES

    cls = MODALITIES.get(kind)
    options = dict(options or {})
    if dataclasses.is_dataclass(cls):
        known = [spec.name for spec in dataclasses.fields(cls) if spec.init]
        check_keys(options, known, what="option", owner=f" for modality {kind!r}")
    return cls(**options)


def _jsonable(value: object) -> object:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value
