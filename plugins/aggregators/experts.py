"""Product and mixture of unimodal experts with the prior as an extra expert (docs/math.md §3.2–3.4)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mmtrain.aggregation import Aggregator
from mmtrain.distributions import Diagonal, Mixture
from mmtrain.errors import ConfigError
from mmtrain.priors import Prior
from mmtrain.registry import AGGREGATORS


@AGGREGATORS.register("poe")
class ProductOfExperts(Aggregator):
    """Precision-weighted product of the present experts and the (never masked) prior expert.

    `poe_reference_bug=True` reproduces the reference code's numerator Σ μ_s v_s (multiplying
    by the variance instead of dividing); off by default.
    """

    needs_expert_features = True
    uses_prior_expert = True
    max_components = 1

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        num_components: int = 1,
        family: str = "normal",
        min_scale: float = 5e-4,
        min_var: float = 1e-3,
        poe_reference_bug: bool = False,
    ) -> None:
        if num_components != 1:
            raise ConfigError(
                "poe multiplies one Gaussian per expert and needs a single-component prior; "
                f"got a {num_components}-component prior (use moe or a learnable aggregator)"
            )
        super().__init__(feature_dim, latent_dim, num_components, family, min_scale)
        self.min_var = min_var
        self.poe_reference_bug = poe_reference_bug

    @classmethod
    def describe_options(cls, options: dict[str, Any]) -> str | None:
        if options.get("poe_reference_bug"):
            return "PoE mode: the reference code's mean Σ μ_s v_s / P (poe_reference_bug on)"
        return "PoE mode: precision-weighted mean (poe_reference_bug off)"

    def forward(self, h: Tensor, mask: Tensor, prior: Prior) -> Diagonal:
        d = self.latent_dim
        prior_loc, prior_log_scale = prior.expert()
        mean = h[..., :d]
        var = self.min_var + torch.exp(2 * h[..., d:])
        prior_var = self.min_var + torch.exp(2 * prior_log_scale[0])
        present = mask[..., None]
        precision = torch.where(present, 1 / var, 0.0).sum(-2) + 1 / prior_var
        if self.poe_reference_bug:
            weighted = torch.where(present, mean * var, 0.0).sum(-2) + prior_loc[0] * prior_var
        else:
            weighted = torch.where(present, mean / var, 0.0).sum(-2) + prior_loc[0] / prior_var
        loc = weighted / precision
        log_scale = -0.5 * torch.log(precision)
        return Diagonal(loc, log_scale, self.family, self.min_scale)


@AGGREGATORS.register("moe")
class MixtureOfExperts(Aggregator):
    """Uniform mixture of the present unimodal experts.

    With no present modality the posterior is the prior mixture (weights softmax(λ), stopped;
    scales with `min_scale` added). The reference uses that fallback only for the sampled
    subset; for the full mask it divides 0 by 0. Here both use the fallback, which is finite
    and equals the subset rule.
    """

    needs_expert_features = True
    uses_prior_expert = True

    def forward(self, h: Tensor, mask: Tensor, prior: Prior) -> Mixture:
        d = self.latent_dim
        batch, num_modalities = mask.shape
        prior_loc, prior_log_scale = prior.expert()
        k = prior_loc.shape[0]
        loc = torch.cat([h[..., :d], prior_loc.expand(batch, k, d)], dim=-2)
        log_scale = torch.cat([h[..., d:], prior_log_scale.expand(batch, k, d)], dim=-2)
        empty = ~mask.any(-1, keepdim=True)
        prior_logits = prior.logits.detach().expand(batch, k)
        logits = torch.cat([torch.zeros_like(h[..., 0]), prior_logits], dim=-1)
        component_mask = torch.cat([mask, empty.expand(batch, k)], dim=-1)
        return Mixture(
            loc, log_scale, logits, component_mask, self.family, self.min_scale, "component"
        )
