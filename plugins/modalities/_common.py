"""Pieces the built-in modality plugins share: cell errors and array conversion, a wrapper
that lets any decoder take leading sample axes, and size-generic strided conv stacks."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from mmtrain.errors import DataError
from mmtrain.nets import activation


def bad_cell(kind: str, problem: str) -> DataError:
    """A `DataError` for one cell of a `kind` modality; the data pipeline adds where."""
    return DataError(f"{kind} cell: {problem}")


def describe(cell: object) -> str:
    text = repr(cell)
    return text if len(text) <= 60 else text[:57] + "..."


def as_float_array(kind: str, cell: object) -> np.ndarray:
    """A list, tuple, numpy array or tensor of finite numbers → a float array."""
    if isinstance(cell, Tensor):
        cell = cell.detach().cpu().numpy()
    if isinstance(cell, str | bytes | dict) or cell is None:
        raise bad_cell(kind, f"expected a list or array of numbers, got {describe(cell)}")
    try:
        array = np.asarray(cell, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise bad_cell(kind, f"expected numbers, got {describe(cell)} ({error})") from None
    if not np.isfinite(array).all():
        raise bad_cell(kind, f"{int((~np.isfinite(array)).sum())} values are NaN or infinite")
    return array


class SampleAxes(nn.Module):
    """Runs `net` on `z [..., d]` flattened to `[N, d]` and returns `[..., P]`.

    `post` reorders the network output before it is flattened to the parameter vector.
    """

    def __init__(self, net: nn.Module, post: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        self.net = net
        self.post = post

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        out = self.net(z.reshape(-1, z.shape[-1]))
        if self.post is not None:
            out = self.post(out)
        return out.reshape(*lead, -1)


def halving_sizes(spatial: tuple[int, ...], max_steps: int, min_size: int) -> list[tuple[int, ...]]:
    """Spatial sizes after each stride-2 conv (kernel 4, padding 1 maps s → ⌊s/2⌋), halving
    while the smallest axis is at least `min_size`."""
    sizes = [tuple(spatial)]
    while len(sizes) <= max_steps and min(sizes[-1]) >= min_size:
        sizes.append(tuple(s // 2 for s in sizes[-1]))
    return sizes


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv1d if dims == 1 else nn.Conv2d


def _conv_transpose(dims: int) -> type[nn.Module]:
    return nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d


class _Act(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.fn = activation(name)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class ConvEncoder(nn.Module):
    """`x [B, C, *spatial] → h [B, F]`: stride-2 convs (kernel 4, padding 1) with the given
    channel widths halve every axis while the smallest is at least `min_size`, then a linear
    layer maps the flattened map to `feature_dim`."""

    def __init__(
        self,
        in_channels: int,
        spatial: tuple[int, ...],
        channels: tuple[int, ...],
        feature_dim: int,
        min_size: int = 8,
        act: str = "relu",
    ) -> None:
        super().__init__()
        sizes = halving_sizes(spatial, len(channels), min_size)
        layers: list[nn.Module] = []
        width = in_channels
        for out in channels[: len(sizes) - 1]:
            layers += [_conv(len(spatial))(width, out, 4, 2, 1), _Act(act)]
            width = out
        self.convs = nn.Sequential(*layers)
        self.out = nn.Linear(width * math.prod(sizes[-1]), feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.convs(x).flatten(1))


class ConvDecoder(nn.Module):
    """`z [N, d] → [N, out_channels, *spatial]`: a linear layer to the encoder's smallest map,
    then stride-2 transposed convs (kernel 4, padding 1, output padding for odd sizes) that
    retrace the encoder's sizes exactly; the last layer has no activation."""

    def __init__(
        self,
        latent_dim: int,
        out_channels: int,
        spatial: tuple[int, ...],
        channels: tuple[int, ...],
        min_size: int = 8,
        act: str = "relu",
    ) -> None:
        super().__init__()
        sizes = halving_sizes(spatial, len(channels), min_size)
        steps = len(sizes) - 1
        widths = [*channels[:steps][::-1], out_channels]
        self.start = (widths[0], *sizes[-1])
        self.inp = nn.Linear(latent_dim, math.prod(self.start))
        layers: list[nn.Module] = []
        for step in range(steps):
            small, big = sizes[steps - step], sizes[steps - step - 1]
            padding = tuple(b - 2 * s for b, s in zip(big, small))
            layers.append(
                _conv_transpose(len(spatial))(
                    widths[step], widths[step + 1], 4, 2, 1, output_padding=padding
                )
            )
            if step < steps - 1:
                layers.append(_Act(act))
        self.act = _Act(act) if steps else nn.Identity()
        self.convs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        x = self.inp(z).reshape(-1, *self.start)
        return self.convs(self.act(x)) if len(self.convs) else x


def one_hot(indices: list[int], num_classes: int) -> Tensor:
    """`[n, C]` float32 one-hot rows."""
    out = torch.zeros(len(indices), num_classes)
    out[torch.arange(len(indices)), torch.tensor(indices, dtype=torch.long)] = 1.0
    return out
