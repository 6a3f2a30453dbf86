"""Priors p(z): fixed N(0, I) or Laplace(0, 1), or a learned K-component mixture (docs/math.md §1.2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmtrain.distributions import Diagonal, Distribution, Mixture, check_family
from mmtrain.errors import ConfigError
from mmtrain.registry import PRIORS


class Prior(nn.Module):
    """A prior with component parameters `[K, d]` (`K = 1` for a fixed prior).

    `expert()` gives the per-component `(loc, log_scale)` rows that PoE and MoE attach to the
    modality features (docs/math.md §3.3); `logits` are the mixture logits λ.
    """

    family: str
    num_components: int
    latent_dim: int

    def expert(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    @property
    def logits(self) -> Tensor:
        raise NotImplementedError

    def distribution(self) -> Distribution:
        raise NotImplementedError

    def log_prob(self, z: Tensor) -> Tensor:
        return self.distribution().log_prob(z)

    def sample(self, num_samples: int) -> Tensor:
        with torch.no_grad():
            return self.distribution().rsample(num_samples)


@PRIORS.register("fixed")
class FixedPrior(Prior):
    """Standard N(0, I) (or Laplace(0, 1)); no parameters."""

    def __init__(self, latent_dim: int, family: str = "normal") -> None:
        super().__init__()
        self.family = check_family(family)
        self.latent_dim = latent_dim
        self.num_components = 1
        self.register_buffer("_zeros", torch.zeros(1, latent_dim), persistent=False)

    def expert(self) -> tuple[Tensor, Tensor]:
        return self._zeros, self._zeros

    @property
    def logits(self) -> Tensor:
        return self._zeros[:, 0]

    def distribution(self) -> Diagonal:
        return Diagonal(self._zeros[0], self._zeros[0], self.family, 0.0)


@PRIORS.register("mixture")
class MixturePrior(Prior):
    """Learned mixture: embedding table `[K, 2d]` (means, log-scales), logits initialised to 1.

    The mixture index is shared across the latent dimensions; scales are exp(log σ) with no
    minimum (docs/math.md §1.2).
    """

    def __init__(self, latent_dim: int, num_components: int, family: str = "normal") -> None:
        super().__init__()
        if num_components < 1:
            raise ConfigError(f"a mixture prior needs at least 1 component, got {num_components}")
        self.family = check_family(family)
        self.latent_dim = latent_dim
        self.num_components = num_components
        self.table = nn.Parameter(
            torch.randn(num_components, 2 * latent_dim) / math.sqrt(2 * latent_dim)
        )
        self.prior_logits = nn.Parameter(torch.ones(num_components))

    def expert(self) -> tuple[Tensor, Tensor]:
        return self.table[:, : self.latent_dim], self.table[:, self.latent_dim :]

    @property
    def logits(self) -> Tensor:
        return self.prior_logits

    def distribution(self) -> Mixture:
        loc, log_scale = self.expert()
        return Mixture(loc, log_scale, self.prior_logits, None, self.family, 0.0, "component")


def build_prior(
    latent_dim: int, num_components: int = 1, family: str = "normal", learned: bool | None = None
) -> Prior:
    """The scripts' rule: fixed when K = 1, a learned mixture otherwise."""
    if learned is None:
        learned = num_components > 1
    if not learned:
        if num_components != 1:
            raise ConfigError("a fixed prior has exactly one component; set num_components=1")
        return FixedPrior(latent_dim, family)
    return MixturePrior(latent_dim, num_components, family)
