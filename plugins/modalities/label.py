"""Label modalities: one of C classes, one-hot `[1, C]`, categorical likelihood, MLP
networks; cells are class indices or class names."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import Tensor, nn

from mmtrain import likelihoods
from mmtrain.errors import ConfigError, DataError, did_you_mean
from mmtrain.likelihoods import Likelihood
from mmtrain.modality import ModalityPlugin, option
from mmtrain.nets import ACTIVATIONS, MLP
from mmtrain.registry import MODALITIES

from ._common import bad_cell, describe, one_hot
from .vector import FlatMLPEncoder, mlp_decoder


@MODALITIES.register("label")
@dataclass
class LabelPlugin(ModalityPlugin):
    """A class label; cells are integers 0..C-1 or class names."""

    kind: ClassVar[str] = "label"

    num_classes: int | None = option(None, "number of classes C (or give class_names)")
    class_names: tuple[str, ...] | None = option(None, "names of the classes, in index order")
    hidden: tuple[int, ...] = option((64,), "hidden widths of the encoder and decoder MLPs")
    act: str = option("relu", "activation of the MLPs", choices=tuple(ACTIVATIONS))
    decoder: str = option(
        "mlp",
        "mlp: an MLP of `hidden`; injective: Dense(C), leaky ReLU 0.1, Dense(C) (the iVAE "
        "scripts' decoder, paper §5)",
        choices=("mlp", "injective"),
    )

    def validate(self) -> None:
        if self.class_names is not None:
            names = self.class_names
            if len(set(names)) != len(names):
                raise ConfigError(f"label class_names repeat a name: {list(names)}")
            if self.num_classes is not None and self.num_classes != len(names):
                raise ConfigError(
                    f"label num_classes is {self.num_classes} but class_names has {len(names)} "
                    "names; give one of them"
                )
            self.num_classes = len(names)
        if self.num_classes is None or self.num_classes < 2:
            raise ConfigError("label modality needs num_classes >= 2 or class_names")

    @property
    def event_shape(self) -> tuple[int, ...]:
        assert self.num_classes is not None
        return (1, self.num_classes)

    def decode_cell(self, cell: object) -> Tensor:
        return one_hot([self.index(cell)], self.event_shape[1])

    def decode_batch(self, cells: Sequence[object] | np.ndarray) -> Tensor:
        """Cells → `[k, 1, C]` one-hot rows in one go; equal to `decode_cells(cells)`."""
        if type(self).decode_cell is not LabelPlugin.decode_cell:
            # A subclass that changes decode_cell must not get this fast path.
            return self.decode_cells(cells)
        indices = self._int_indices(cells)
        if indices is None:
            indices = [self.index(cell) for cell in cells]
        return one_hot(indices, self.event_shape[1]).reshape(-1, *self.event_shape)

    def _int_indices(self, cells: Sequence[object] | np.ndarray) -> list[int] | None:
        """The cells when all are Python ints inside 0..C-1 (what an integer column gives),
        else None (also when a subclass changes `index`)."""
        if type(self).index is not LabelPlugin.index or isinstance(cells, np.ndarray):
            return None
        if not all(type(c) is int for c in cells):
            return None
        if cells and (min(cells) < 0 or max(cells) >= self.event_shape[1]):
            return None
        return list(cells)

    def index(self, cell: object) -> int:
        """The class index of a cell (integer, integral float or class name)."""
        count = self.event_shape[1]
        if isinstance(cell, str):
            if self.class_names is not None:
                if cell in self.class_names:
                    return self.class_names.index(cell)
                hint = did_you_mean(cell, self.class_names)
                raise bad_cell(self.kind, f"unknown class name {cell!r}{hint}")
            if cell.strip().lstrip("-").isdigit():
                cell = int(cell)
            else:
                raise bad_cell(
                    self.kind, f"class name {cell!r} given but the modality has no class_names"
                )
        if isinstance(cell, bool) or not isinstance(cell, numbers.Real):
            raise bad_cell(self.kind, f"expected a class index or name, got {describe(cell)}")
        if not float(cell).is_integer():
            raise bad_cell(self.kind, f"class index must be a whole number, got {cell!r}")
        value = int(cell)
        if not 0 <= value < count:
            raise bad_cell(self.kind, f"class index {value} is outside 0..{count - 1}")
        return value

    def build_likelihood(self) -> Likelihood:
        return likelihoods.build_likelihood("categorical", self.event_shape)

    def build_encoder(self, feature_dim: int) -> nn.Module:
        return FlatMLPEncoder(self.event_shape[1], feature_dim, self.hidden, self.act)

    def build_decoder(self, latent_dim: int, num_params: int) -> nn.Module:
        if self.decoder == "injective":
            return mlp_decoder("injective", latent_dim, num_params, self.hidden)
        return MLP(latent_dim, num_params, self.hidden, len(self.hidden), self.act)

    def name(self, index: int) -> str:
        return self.class_names[index] if self.class_names else str(index)

    def preview(self, x: Tensor) -> str:
        """The class of a one-hot row, or the most likely class and its probability."""
        x = x.detach().float().cpu()
        if x.shape[-1] != self.event_shape[1]:
            raise DataError(f"label preview needs [..., {self.event_shape[1]}] probabilities")
        rows = x.reshape(-1, x.shape[-1])
        lines = []
        for row in rows[:32]:
            top = int(row.argmax())
            p = float(row[top])
            lines.append(self.name(top) if p == 1.0 else f"{self.name(top)} (p={p:.2f})")
        return "\n".join(lines)
