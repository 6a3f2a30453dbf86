"""A modality as the model sees it: an encoder to features, a decoder to likelihood
parameters, and the likelihood that scores observations."""

from __future__ import annotations

from torch import Tensor, nn

from mmtrain.likelihoods import Likelihood


class Modality(nn.Module):
    """Encoder `x [B, *event] → h [B, F]`, decoder `z [..., B, d] → params [..., B, P]`, and
    the likelihood `log_prob(params, x) → [..., B]`."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Likelihood) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.likelihood.event_shape

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return self.likelihood.log_prob(params, x)
