"""The `gated_attention` aggregator: gated attention pooling (Ilse, Tomczak and Welling,
2018) over the present modalities."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmtrain.aggregation import Aggregator
from mmtrain.distributions import Distribution
from mmtrain.nets import MLP
from mmtrain.priors import Prior
from mmtrain.registry import AGGREGATORS


@AGGREGATORS.register("gated_attention")
class GatedAttention(Aggregator):
    """Gated attention pooling: e_s = MLP(h_s), a_s = wᵀ(tanh(V e_s) ⊙ σ(U e_s)), weights
    softmax over the present modalities, ρ(Σ_s weight_s e_s); q(z|∅) = ρ(0).

    Args:
        hidden_size: width of the embedding e_s and of ρ's hidden layer.
        attention_size: width of the gates V and U.
        act: activation of the MLPs.
    """

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        num_components: int = 1,
        family: str = "normal",
        min_scale: float = 5e-4,
        hidden_size: int = 64,
        attention_size: int = 32,
        act: str = "relu",
    ) -> None:
        super().__init__(feature_dim, latent_dim, num_components, family, min_scale)
        self.embed = MLP(feature_dim, hidden_size, hidden_size, 1, act)
        self.gate_tanh = nn.Linear(hidden_size, attention_size)
        self.gate_sigmoid = nn.Linear(hidden_size, attention_size)
        self.score = nn.Linear(attention_size, 1, bias=False)
        self.rho = MLP(hidden_size, self.head_size, hidden_size, 1, act)

    def forward(self, h: Tensor, mask: Tensor, prior: Prior) -> Distribution:
        # Masked rows are zeroed before anything reads them and get zero weight after, so
        # neither their values nor NaN in them can reach the output or the gradients.
        e = self.embed(torch.where(mask[..., None], h, 0.0))
        gate = torch.tanh(self.gate_tanh(e)) * torch.sigmoid(self.gate_sigmoid(e))
        scores = self.score(gate).squeeze(-1)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.where(mask, torch.softmax(scores, dim=-1), 0.0)
        pooled = (weights[..., None] * e).sum(-2)
        return self.head_to_distribution(self.rho(pooled))


@AGGREGATORS.register("gated_attention_mixture")
class GatedAttentionMixture(GatedAttention):
    """Gated attention pooling with a K-component mixture head."""

    mixture_head = True
