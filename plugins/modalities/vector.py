"""Vector modalities: MLP encoder, linear / injective / MLP decoder, and a normal or laplace
likelihood (categorical and bernoulli for small one-hot or binary tables)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from mmtrain import likelihoods
from mmtrain.errors import ConfigError
from mmtrain.likelihoods import SCALE_MODES, Likelihood
from mmtrain.modality import ModalityPlugin, option
from mmtrain.nets import ACTIVATIONS, MLP
from mmtrain.registry import MODALITIES

from ._common import as_float_array, bad_cell

DECODERS = ("linear", "injective", "mlp")
LIKELIHOODS = ("normal", "laplace", "categorical", "bernoulli")


class FlatMLPEncoder(nn.Module):
    """Flattens the event axes, then an MLP to the feature size."""

    def __init__(self, event_size: int, feature_dim: int, hidden: tuple[int, ...], act: str):
        super().__init__()
        self.mlp = MLP(event_size, feature_dim, hidden, len(hidden), act)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x.flatten(1))


def mlp_decoder(kind: str, latent_dim: int, out: int, hidden: tuple[int, ...]) -> nn.Module:
    if kind == "linear":
        return nn.Linear(latent_dim, out)
    if kind == "injective":
        # Dense(D) → leaky ReLU(0.1) → Dense, the iVAE scripts' decoder (docs/math.md §4.2).
        return MLP(latent_dim, out, (out,), 1, "leaky_relu_0.1")
    if kind == "mlp":
        return MLP(latent_dim, out, hidden, len(hidden), "relu")
    raise ConfigError(f"unknown decoder {kind!r}; choose one of {DECODERS}")


@MODALITIES.register("vector")
@dataclass
class VectorPlugin(ModalityPlugin):
    """A real vector (or a small table) with MLP networks; cells are lists or arrays."""

    kind: ClassVar[str] = "vector"

    shape: tuple[int, ...] = option((1,), "event shape of one example, e.g. [25] or [1, 5]")
    likelihood: str = option(
        "normal",
        "decoder likelihood; categorical expects one-hot [n, C] cells",
        choices=LIKELIHOODS,
    )
    encoder_hidden: tuple[int, ...] = option((256, 256), "hidden widths of the encoder MLP")
    encoder_act: str = option("relu", "encoder activation", choices=tuple(ACTIVATIONS))
    decoder: str = option(
        "mlp",
        "linear; injective (Dense(P), leaky ReLU 0.1, Dense); or an MLP of decoder_hidden",
        choices=DECODERS,
    )
    decoder_hidden: tuple[int, ...] = option((256, 256), "hidden widths of the mlp decoder")
    scale_mode: str = option(
        "fixed",
        "normal/laplace scale: fixed, learned per dimension, or output by the decoder",
        choices=SCALE_MODES,
    )
    init_log_scale: float = option(0.0, "initial (or fixed) log-scale of normal/laplace")
    min_scale: float = option(5e-4, "added to exp(log-scale)")

    def validate(self) -> None:
        if not self.shape or any(s < 1 for s in self.shape):
            raise ConfigError(f"vector option 'shape' must be positive sizes, got {self.shape}")
        if self.likelihood == "categorical" and len(self.shape) != 2:
            raise ConfigError(
                f"a categorical vector needs shape [variables, classes], got {list(self.shape)}"
            )

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.shape)

    def decode_cell(self, cell: object) -> Tensor:
        array = as_float_array(self.kind, cell)
        size = math.prod(self.shape)
        if array.size != size:
            raise bad_cell(
                self.kind,
                f"expected {size} values (shape {list(self.shape)}), got {array.size} "
                f"(shape {list(array.shape)})",
            )
        if self.likelihood == "categorical":
            rows = array.reshape(self.shape)
            if not (np.isin(rows, (0.0, 1.0)).all() and (rows.sum(-1) == 1).all()):
                raise bad_cell(self.kind, "categorical cells must be one-hot rows of 0 and 1")
        if self.likelihood == "bernoulli" and ((array < 0) | (array > 1)).any():
            raise bad_cell(self.kind, "bernoulli cells must lie in [0, 1]")
        return torch.as_tensor(array, dtype=torch.float32).reshape(self.shape)

    def decode_batch(self, cells: Sequence[object] | np.ndarray) -> Tensor:
        """Cells → `[k, *shape]` in one conversion; equal to `decode_cells(cells)`."""
        if type(self).decode_cell is not VectorPlugin.decode_cell:
            # A subclass that changes decode_cell must not get this fast path.
            return self.decode_cells(cells)
        array = _float_rows(cells)
        if array is None or array.shape[1] != self.event_size or not np.isfinite(array).all():
            return self.decode_cells(cells)
        if self.likelihood == "categorical":
            rows = array.reshape(-1, *self.shape)
            if not (np.isin(rows, (0.0, 1.0)).all() and (rows.sum(-1) == 1).all()):
                return self.decode_cells(cells)
        if self.likelihood == "bernoulli" and ((array < 0) | (array > 1)).any():
            return self.decode_cells(cells)
        # float64 first, as decode_cell converts: integers beyond 2**24 round the same way.
        return torch.as_tensor(array, dtype=torch.float32).reshape(-1, *self.shape)

    def build_likelihood(self) -> Likelihood:
        if self.likelihood in ("normal", "laplace"):
            return likelihoods.build_likelihood(
                self.likelihood,
                self.event_shape,
                scale_mode=self.scale_mode,
                init_log_scale=self.init_log_scale,
                min_scale=self.min_scale,
            )
        return likelihoods.build_likelihood(self.likelihood, self.event_shape)

    def build_encoder(self, feature_dim: int) -> nn.Module:
        return FlatMLPEncoder(self.event_size, feature_dim, self.encoder_hidden, self.encoder_act)

    def build_decoder(self, latent_dim: int, num_params: int) -> nn.Module:
        return mlp_decoder(self.decoder, latent_dim, num_params, self.decoder_hidden)

    def preview(self, x: Tensor) -> str:
        x = x.detach().float().cpu()
        if x.dim() > len(self.shape):
            return "\n".join(self.preview(row) for row in x.reshape(-1, *self.shape)[:16])
        values = x.flatten().tolist()
        shown = ", ".join(f"{v:.3g}" for v in values[:12])
        return f"[{shown}{', …' if len(values) > 12 else ''}]"


def _float_rows(cells: Sequence[object] | np.ndarray) -> np.ndarray | None:
    """Cells as one float64 array `[k, values]` when they are numeric arrays (or plain
    numbers) of one size; None when some cell needs `decode_cell`'s own checks."""
    if isinstance(cells, np.ndarray):
        if cells.ndim == 0 or len(cells) == 0 or cells.dtype.kind not in "biuf":
            return None
        return cells.astype(np.float64, copy=False).reshape(len(cells), -1)
    if not cells:
        return None
    first = cells[0]
    if isinstance(first, np.ndarray):
        if first.dtype.kind not in "biuf" or not all(
            isinstance(c, np.ndarray) and c.dtype == first.dtype and c.shape == first.shape
            for c in cells
        ):
            return None
        return np.stack(cells).astype(np.float64, copy=False).reshape(len(cells), -1)
    if all(type(c) is float or type(c) is int for c in cells):
        try:
            return np.asarray(cells, dtype=np.float64).reshape(len(cells), 1)
        except OverflowError:
            return None
    return None
