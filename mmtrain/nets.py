"""Small building blocks shared by encoders, decoders and aggregators."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmtrain.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "leaky_relu_0.1": lambda x: F.leaky_relu(x, 0.1),
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "silu": F.silu,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """`MLP[n_in → hidden × depth → n_out]`: each hidden Dense is followed by the activation,
    the last Dense has none (SPEC §3.1)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int | tuple[int, ...] = 256,
        depth: int = 2,
        act: str = "relu",
    ) -> None:
        super().__init__()
        widths = [hidden] * depth if isinstance(hidden, int) else list(hidden)
        sizes = [in_features, *widths]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], out_features)
        self.act_name = act
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden:
            x = self.act(layer(x))
        return self.out(x)


class MaskedMLP(MLP):
    """The masked form: input and output zeroed where the mask is 0 (with `where`, so
    NaN or inf in masked rows never leaks)."""

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        keep = mask[..., None]
        return torch.where(keep, super().forward(torch.where(keep, x, 0.0)), 0.0)
