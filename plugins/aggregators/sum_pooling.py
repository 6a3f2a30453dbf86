"""DeepSets sum pooling (docs/math.md §3.5): ρ(Σ_{s∈S} χ(h_s))."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mmtrain.aggregation import Aggregator
from mmtrain.distributions import Distribution
from mmtrain.nets import MLP, MaskedMLP
from mmtrain.priors import Prior
from mmtrain.registry import AGGREGATORS


@AGGREGATORS.register("sum_pooling")
class SumPooling(Aggregator):
    """χ is a masked MLP shared over modalities, ρ an MLP on the pooled sum; q(z|∅) = ρ(0)."""

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        num_components: int = 1,
        family: str = "normal",
        min_scale: float = 5e-4,
        pooling_size: int = 256,
        hidden_size: int = 256,
        element_depth: int = 2,
        pooled_depth: int = 2,
        act: str = "leaky_relu",
    ) -> None:
        super().__init__(feature_dim, latent_dim, num_components, family, min_scale)
        self.chi = MaskedMLP(feature_dim, pooling_size, hidden_size, element_depth, act)
        self.rho = MLP(pooling_size, self.head_size, hidden_size, pooled_depth, act)

    @classmethod
    def options_for_width(cls, width: int) -> dict[str, Any]:
        return {"pooling_size": width, "hidden_size": width}

    def forward(self, h: Tensor, mask: Tensor, prior: Prior) -> Distribution:
        pooled = self.chi(h, mask).sum(-2)
        return self.head_to_distribution(self.rho(pooled))

    def forward_pair(
        self, h: Tensor, full_mask: Tensor, subset_mask: Tensor, prior: Prior
    ) -> tuple[Distribution, Distribution]:
        # χ acts on each element alone, so one pass over the features serves both masks.
        elements = self.chi(h, full_mask | subset_mask)
        both = torch.stack([full_mask, subset_mask])[..., None]
        heads = self.rho(torch.where(both, elements, 0.0).sum(-2))
        return self.head_to_distribution(heads[0]), self.head_to_distribution(heads[1])


@AGGREGATORS.register("sum_pooling_mixture")
class SumPoolingMixture(SumPooling):
    """Sum pooling with a K-component mixture head `[K × (mean, log-scale)] ++ [K logits]`."""

    mixture_head = True
