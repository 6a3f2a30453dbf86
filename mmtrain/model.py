"""The multi-modal VAE: modality encoders → aggregator (full and subset mask, shared weights)
→ posteriors → decoders (docs/math.md §1, §2.9)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mmtrain.aggregation import Aggregator
from mmtrain.batch import Batch
from mmtrain.distributions import Distribution
from mmtrain.errors import ConfigError, DataError
from mmtrain.modality import Modality
from mmtrain.priors import Prior


class MultiModalVAE(nn.Module):
    """Modalities in a fixed order, one permutation-invariant aggregator, one prior."""

    def __init__(
        self,
        modalities: dict[str, Modality],
        aggregator: Aggregator,
        prior: Prior,
        reconstruction_weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        if not modalities:
            raise ConfigError("a model needs at least one modality")
        if aggregator.uses_prior_expert and aggregator.latent_dim != prior.latent_dim:
            raise ConfigError(
                f"aggregator latent size {aggregator.latent_dim} != prior latent size "
                f"{prior.latent_dim}"
            )
        if aggregator.num_components != prior.num_components:
            raise ConfigError(
                f"aggregator has {aggregator.num_components} mixture components but the prior "
                f"has {prior.num_components}; docs/math.md uses one K for both"
            )
        self.modality_names = list(modalities)
        self.modalities = nn.ModuleDict(modalities)
        self.aggregator = aggregator
        self.prior = prior
        weights = reconstruction_weights or {}
        unknown = set(weights) - set(modalities)
        if unknown:
            raise ConfigError(f"reconstruction weights for unknown modalities: {sorted(unknown)}")
        self.register_buffer(
            "reconstruction_weights",
            torch.tensor([float(weights.get(name, 1.0)) for name in modalities]),
            persistent=False,
        )

    @property
    def latent_dim(self) -> int:
        return self.aggregator.latent_dim

    @property
    def num_modalities(self) -> int:
        return len(self.modality_names)

    def clean(self, batch: Batch) -> dict[str, Tensor]:
        """Observations with every missing entry replaced by 0 (docs/math.md §1.4)."""
        if batch.avail.shape[1] != self.num_modalities:
            raise DataError(
                f"availability mask has {batch.avail.shape[1]} columns, the model has "
                f"{self.num_modalities} modalities ({', '.join(self.modality_names)})"
            )
        missing = [name for name in self.modality_names if name not in batch.x]
        if missing:
            raise DataError(f"batch lacks modalities {missing}; it has {sorted(batch.x)}")
        cleaned = {}
        for index, name in enumerate(self.modality_names):
            x = batch.x[name]
            keep = batch.avail[:, index].reshape(-1, *([1] * (x.dim() - 1)))
            cleaned[name] = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
        return cleaned

    def encode_features(self, x: dict[str, Tensor]) -> Tensor:
        """Stack the modality features `h` to `[B, M, F]`; encoders see cleaned inputs."""
        return torch.stack(
            [self.modalities[name].encode(x[name]) for name in self.modality_names], 1
        )

    def posterior(self, h: Tensor, mask: Tensor) -> Distribution:
        return self.aggregator(h, mask.bool(), self.prior)

    def posterior_pair(
        self, h: Tensor, full_mask: Tensor, subset_mask: Tensor
    ) -> tuple[Distribution, Distribution]:
        return self.aggregator.forward_pair(h, full_mask.bool(), subset_mask.bool(), self.prior)

    def decode(self, z: Tensor) -> dict[str, Tensor]:
        return {name: self.modalities[name].decode(z) for name in self.modality_names}

    def reconstruction_log_probs(
        self, z: Tensor, x: dict[str, Tensor], names: Sequence[str] | None = None
    ) -> Tensor:
        """log p(x_s | z) for every modality (or only `names`, whose decoders alone run):
        `z [L, B, d] → [L, B, M]` (or `[L, B, len(names)]`)."""
        return torch.stack(
            [
                self.modalities[name].log_prob(self.modalities[name].decode(z), x[name])
                for name in (self.modality_names if names is None else names)
            ],
            -1,
        )

    def encode(self, batch: Batch, mask: Tensor | None = None) -> Distribution:
        """q(z | x_S) for the subset `mask` (default: everything observed)."""
        x = self.clean(batch)
        h = self.encode_features(x)
        subset = batch.avail if mask is None else mask & batch.avail
        return self.posterior(h, subset)

    @torch.no_grad()
    def generate(self, num_samples: int) -> dict[str, Tensor]:
        """Decoder means for latents drawn from the prior."""
        z = self.prior.sample(num_samples)
        return {
            name: self.modalities[name].likelihood.mean(self.modalities[name].decode(z))
            for name in self.modality_names
        }
