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


class ModalityPlugin:
    """A kind of modality (vector, image, text, label, …), configured by keyword options.

    A plugin turns dataset cells into tensors (`decode_cell`), builds the networks of one
    configured modality (`build`), and renders a sample for people (`preview`). Registered
    in `mmtrain.registry.MODALITIES` under its `kind`; instantiate as
    `MODALITIES.get(kind)(**options)`.
    """

    kind: str = ""

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one example of this modality (without the batch axis)."""
        raise NotImplementedError

    @property
    def dtype(self):  # noqa: ANN201 - torch.dtype
        import torch

        return torch.float32

    def decode_cell(self, cell: object) -> Tensor:
        """One dataset cell → a tensor of `event_shape`; a bad cell raises `DataError`."""
        raise NotImplementedError

    def build(self, feature_dim: int, latent_dim: int) -> Modality:
        """The encoder (→ `feature_dim`), decoder (from `latent_dim`) and likelihood."""
        raise NotImplementedError

    def preview(self, x: Tensor) -> object:
        """A PIL image or a string that shows one example (or decoder mean) to a person."""
        raise NotImplementedError

    def options(self) -> dict[str, object]:
        """The JSON-safe options that rebuild this plugin: `type(self)(**options)`."""
        raise NotImplementedError
