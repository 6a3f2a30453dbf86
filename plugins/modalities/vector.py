"""Vector modalities: MLP encoder, linear / injective / MLP decoder, and a normal, laplace,
categorical or bernoulli likelihood."""

from __future__ import annotations

import math

from torch import Tensor, nn

from mmtrain.errors import ConfigError
from mmtrain.likelihoods import build_likelihood
from mmtrain.modality import Modality
from mmtrain.nets import MLP
from mmtrain.registry import MODALITIES

DECODERS = ("linear", "injective", "mlp")


class FlatMLPEncoder(nn.Module):
    """Flattens the event axes, then an MLP to the feature size."""

    def __init__(self, event_size: int, feature_dim: int, hidden: tuple[int, ...], act: str):
        super().__init__()
        self.mlp = MLP(event_size, feature_dim, hidden, len(hidden), act)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x.flatten(1))


def build_decoder(kind: str, latent_dim: int, out: int, hidden: tuple[int, ...]) -> nn.Module:
    if kind == "linear":
        return nn.Linear(latent_dim, out)
    if kind == "injective":
        # Dense(D) → leaky ReLU(0.1) → Dense, the iVAE scripts' decoder (SPEC §4.2).
        return MLP(latent_dim, out, (out,), 1, "leaky_relu_0.1")
    if kind == "mlp":
        return MLP(latent_dim, out, hidden, len(hidden), "relu")
    raise ConfigError(f"unknown decoder {kind!r}; choose one of {DECODERS}")


@MODALITIES.register("vector")
def vector_modality(
    event_shape: tuple[int, ...],
    feature_dim: int,
    latent_dim: int,
    likelihood: str = "normal",
    encoder_hidden: tuple[int, ...] = (256, 256),
    decoder: str = "mlp",
    decoder_hidden: tuple[int, ...] = (256, 256),
    encoder_act: str = "relu",
    scale_mode: str = "fixed",
    init_log_scale: float = 0.0,
    min_scale: float = 5e-4,
) -> Modality:
    """A vector (or small categorical table) modality with MLP networks."""
    event_shape = tuple(event_shape)
    if likelihood in ("normal", "laplace"):
        lik = build_likelihood(
            likelihood,
            event_shape,
            scale_mode=scale_mode,
            init_log_scale=init_log_scale,
            min_scale=min_scale,
        )
    else:
        lik = build_likelihood(likelihood, event_shape)
    encoder = FlatMLPEncoder(
        math.prod(event_shape), feature_dim, tuple(encoder_hidden), encoder_act
    )
    dec = build_decoder(decoder, latent_dim, lik.num_params, tuple(decoder_hidden))
    return Modality(encoder, dec, lik)
