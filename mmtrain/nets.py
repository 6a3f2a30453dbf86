"""Small building blocks shared by encoders, decoders and aggregators."""

from __future__ import annotations

import math
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
    the last Dense has none (docs/math.md §3.1)."""

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


# ---------------------------------------------------------------------------------------------
# initialisation

#: `flax`: LeCun-normal weights and zero biases, as the paper's Flax code; `torch`: PyTorch's
#: own layer defaults, left untouched.
INIT_SCHEMES = ("flax", "torch")

#: standard deviation of N(0, 1) truncated to [−2, 2]; dividing by it gives the truncated draw
#: exactly the target variance (the constant of `jax.nn.initializers.variance_scaling`)
TRUNCATED_NORMAL_STD = 0.87962566103423978

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def check_init_scheme(scheme: str) -> str:
    if scheme not in INIT_SCHEMES:
        raise ConfigError(
            f"unknown initialisation {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}"
        )
    return scheme


def lecun_normal_(weight: Tensor, fan_in: int, generator: torch.Generator | None = None) -> Tensor:
    """Fill `weight` in place as `flax.linen.initializers.lecun_normal()`: N(0, 1) truncated to
    [−2, 2], times sqrt(1 / fan_in) / 0.8796…, so the variance is exactly 1 / fan_in and no
    entry exceeds 2 / 0.8796… · sqrt(1 / fan_in) in magnitude."""
    if fan_in < 1:
        raise ConfigError(f"fan-in must be at least 1, got {fan_in}")
    with torch.no_grad():
        nn.init.trunc_normal_(weight, 0.0, 1.0, -2.0, 2.0, generator=generator)
        weight.mul_(math.sqrt(1.0 / fan_in) / TRUNCATED_NORMAL_STD)
    return weight


def fan_in(layer: nn.Module) -> int:
    """The number of inputs summed into one output of `layer`, as Flax counts it.

    Linear: `in_features`. Conv: `in_channels / groups` × kernel elements. Transposed conv:
    also `in_channels / groups` × kernel elements — what `flax.linen.ConvTranspose` uses (its
    kernel is `(*kernel_size, in, out)` and LeCun normal takes the fan-in from the `in` axis
    and the kernel window). PyTorch's own default instead reads the fan-in off its
    `[in, out / groups, *kernel]` weight as `out / groups` × kernel elements (the fan-in of
    the adjoint convolution); we follow Flax so that one rule covers every layer.
    """
    if isinstance(layer, nn.Linear):
        return layer.in_features
    if isinstance(layer, _CONVS + _TRANSPOSED_CONVS):
        return layer.in_channels // layer.groups * math.prod(layer.kernel_size)
    raise TypeError(f"no fan-in rule for {type(layer).__name__}")


def initialise(module: nn.Module, scheme: str = "flax") -> nn.Module:
    """Initialise the networks of `module` (in place) with `scheme` and return it.

    `flax` (the default of every model mmtrain builds) mirrors the paper's Flax code: every
    Linear, Conv, transposed Conv and MultiheadAttention projection gets LeCun-normal
    weights (truncated normal with variance 1 / fan-in, see `fan_in` and `lecun_normal_`)
    and zero biases; Embedding tables get N(0, 1 / embedding_dim) (Flax `Embed`); LayerNorm
    gets ones and zeros. Other parameters (learned log-scales, the prior's table and logits)
    keep the values their modules chose. A submodule with `keep_initialisation = True` is
    left alone with everything below it, for plugins that initialise themselves.

    `torch` leaves PyTorch's layer defaults (Kaiming-uniform weights with a = √5 and uniform
    biases) exactly as they are. The paper's linear-Gaussian fit needs `flax`: under
    PyTorch's narrower weights and non-zero biases the deep encoders learn far more slowly.
    """
    if check_init_scheme(scheme) == "torch":
        return module
    _initialise_flax(module)
    return module


def _initialise_flax(module: nn.Module) -> None:
    if getattr(module, "keep_initialisation", False):
        return
    if isinstance(module, (nn.Linear, *_CONVS, *_TRANSPOSED_CONVS)):
        lecun_normal_(module.weight, fan_in(module))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.MultiheadAttention):
        for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            weight = getattr(module, name, None)
            if weight is not None:
                lecun_normal_(weight, weight.shape[1])
        if module.in_proj_bias is not None:
            nn.init.zeros_(module.in_proj_bias)
        for bias in (module.bias_k, module.bias_v):
            if bias is not None:
                nn.init.zeros_(bias)
    elif isinstance(module, nn.Embedding):
        with torch.no_grad():
            nn.init.normal_(module.weight, 0.0, math.sqrt(1.0 / module.embedding_dim))
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    for child in module.children():
        _initialise_flax(child)
