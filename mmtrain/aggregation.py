"""The aggregator interface: a permutation-invariant map from a masked set of modality
features to the posterior q(z | x_S) (docs/math.md §3)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from mmtrain.distributions import Diagonal, Distribution, Mixture, check_family
from mmtrain.errors import ConfigError
from mmtrain.priors import Prior


class Aggregator(nn.Module):
    """Base class of aggregator plugins.

    `forward(h [B, M, F], mask [B, M] bool, prior) → Distribution` with batch shape `[B]`.
    Implementations must be invariant to a joint permutation of the M axis of `h` and `mask`,
    blind to the features of masked rows, and finite when `mask` is all false.
    """

    #: feature size the modality encoders must produce; `None` means free (set by config).
    needs_expert_features: ClassVar[bool] = False
    #: whether the aggregator uses the prior's per-component parameters as extra experts.
    uses_prior_expert: ClassVar[bool] = False
    #: whether it outputs a K-component mixture head.
    mixture_head: ClassVar[bool] = False
    #: the largest number of mixture components (prior and posterior K) it supports.
    max_components: ClassVar[int | None] = None

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        num_components: int = 1,
        family: str = "normal",
        min_scale: float = 5e-4,
    ) -> None:
        super().__init__()
        if self.needs_expert_features and feature_dim != 2 * latent_dim:
            raise ConfigError(
                f"{type(self).__name__} needs features of size 2·latent_dim = {2 * latent_dim} "
                f"(unimodal [mean, log-scale]); got {feature_dim}"
            )
        self.feature_dim = feature_dim
        self.latent_dim = latent_dim
        self.num_components = num_components
        self.family = check_family(family)
        self.min_scale = min_scale

    @classmethod
    def required_feature_dim(cls, latent_dim: int) -> int | None:
        return 2 * latent_dim if cls.needs_expert_features else None

    @classmethod
    def options_for_width(cls, width: int) -> dict[str, Any]:
        """The aggregator's options that size its networks to `width` (the config's
        `model.aggregator_width`); explicit `model.aggregator_options` override them."""
        return {}

    @classmethod
    def describe_options(cls, options: dict[str, Any]) -> str | None:
        """One line that results tables print when these options change what the numbers
        mean (e.g. a reproduced quirk of the reference code), or None."""
        return None

    @property
    def head_size(self) -> int:
        """Output size of the network head: 2d, or (1 + 2d)K for a mixture head (docs/math.md §3.7)."""
        if self.mixture_head:
            return (1 + 2 * self.latent_dim) * self.num_components
        return 2 * self.latent_dim

    def head_to_distribution(self, out: Tensor) -> Distribution:
        """Split a head output: `[mean d, log-scale d]`, or K such blocks followed by K logits."""
        d = self.latent_dim
        if not self.mixture_head:
            return Diagonal(out[..., :d], out[..., d:], self.family, self.min_scale)
        k = self.num_components
        blocks = out[..., : 2 * d * k].reshape(*out.shape[:-1], k, 2 * d)
        logits = out[..., 2 * d * k :]
        return Mixture(blocks[..., :d], blocks[..., d:], logits, None, self.family, self.min_scale)

    def forward(self, h: Tensor, mask: Tensor, prior: Prior) -> Distribution:
        raise NotImplementedError

    def forward_pair(
        self, h: Tensor, full_mask: Tensor, subset_mask: Tensor, prior: Prior
    ) -> tuple[Distribution, Distribution]:
        """q(z | x) and q(z | x_S) with shared weights; fused implementations may override."""
        return self.forward(h, full_mask, prior), self.forward(h, subset_mask, prior)
