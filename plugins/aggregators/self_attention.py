"""Set-Transformer style self-attention over the modality set (docs/math.md §3.6), pre-LN.

e_s = MLP(h_s); `depth` blocks of masked multi-head self-attention and a ReLU feed-forward,
each with a residual; a final LayerNorm; masked sum pooling; ρ to the posterior head. The
attention itself is `mmtrain.ops.masked_set_attention`, which a fused kernel may serve.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mmtrain import ops
from mmtrain.aggregation import Aggregator
from mmtrain.distributions import Distribution
from mmtrain.errors import ConfigError
from mmtrain.nets import MLP
from mmtrain.priors import Prior
from mmtrain.registry import AGGREGATORS


class MaskedSelfAttentionBlock(nn.Module):
    """Pre-LN block: separate LayerNorms for queries and keys/values, bias-free projections,
    scores scaled by the per-head width, ReLU in the feed-forward (docs/math.md §3.6)."""

    def __init__(self, width: int, attention_size: int, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if attention_size < num_heads:
            raise ConfigError(
                f"attention_size {attention_size} is smaller than num_heads {num_heads}"
            )
        self.num_heads = num_heads
        self.head_dim = attention_size // num_heads
        inner = self.head_dim * num_heads
        self.norm_q = nn.LayerNorm(width, eps=1e-6)
        self.norm_kv = nn.LayerNorm(width, eps=1e-6)
        self.query = nn.Linear(width, inner, bias=False)
        self.key = nn.Linear(width, inner, bias=False)
        self.value = nn.Linear(width, inner, bias=False)
        self.project = nn.Linear(inner, width, bias=False)
        self.norm_ff = nn.LayerNorm(width, eps=1e-6)
        self.ff_in = nn.Linear(width, hidden_size)
        self.ff_out = nn.Linear(hidden_size, width)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(-2, -3)

    def _qkv(self, e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q_in, kv_in = self.norm_q(e), self.norm_kv(e)
        return (
            self._heads(self.query(q_in)),
            self._heads(self.key(kv_in)),
            self._heads(self.value(kv_in)),
        )

    def _finish(self, e: Tensor, attended: Tensor) -> Tensor:
        e = e + self.project(attended.transpose(-2, -3).flatten(-2))
        return e + self.ff_out(torch.relu(self.ff_in(self.norm_ff(e))))

    def forward(self, e: Tensor, mask: Tensor) -> Tensor:
        return self._finish(e, ops.masked_set_attention(*self._qkv(e), mask))

    def forward_two_masks(self, e: Tensor, mask_a: Tensor, mask_b: Tensor) -> Tensor:
        """The block under two masks for the same input: q, k, v are computed once and the
        fused op attends under both masks; returns the stacked `[2, B, M, width]`."""
        out_a, out_b = ops.masked_set_attention_two_mask(*self._qkv(e), mask_a, mask_b)
        return self._finish(e.expand(2, *e.shape), torch.stack([out_a, out_b]))


@AGGREGATORS.register("self_attention")
class SelfAttention(Aggregator):
    """Masked set self-attention then masked sum pooling; q(z|∅) = ρ(0), a learned constant."""

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        num_components: int = 1,
        family: str = "normal",
        min_scale: float = 5e-4,
        pooling_size: int = 256,
        hidden_size: int = 256,
        attention_size: int = 256,
        num_heads: int = 4,
        depth: int = 1,
        pooled_depth: int = 2,
        act: str = "leaky_relu",
    ) -> None:
        super().__init__(feature_dim, latent_dim, num_components, family, min_scale)
        self.embed = MLP(feature_dim, pooling_size, hidden_size, 1, act)
        self.blocks = nn.ModuleList(
            MaskedSelfAttentionBlock(pooling_size, attention_size, hidden_size, num_heads)
            for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(pooling_size, eps=1e-6)
        self.rho = MLP(pooling_size, self.head_size, hidden_size, pooled_depth, act)

    @classmethod
    def options_for_width(cls, width: int) -> dict[str, Any]:
        return {"pooling_size": width, "hidden_size": width, "attention_size": width}

    def forward(self, h: Tensor, mask: Tensor, prior: Prior) -> Distribution:
        # Masked rows are zeroed before the embedding so that NaN or inf there reaches no
        # gradient either (the attention op is blind to them on its own).
        e = self.embed(torch.where(mask[..., None], h, 0.0))
        for block in self.blocks:
            e = block(e, mask)
        pooled = torch.where(mask[..., None], self.norm_out(e), 0.0).sum(-2)
        return self.head_to_distribution(self.rho(pooled))

    def forward_pair(
        self, h: Tensor, full_mask: Tensor, subset_mask: Tensor, prior: Prior
    ) -> tuple[Distribution, Distribution]:
        # The embedding ignores the mask, so the first block sees the same input under both
        # masks: one q/k/v projection and one two-mask attention serve both passes.
        e = self.embed(torch.where((full_mask | subset_mask)[..., None], h, 0.0))
        masks = torch.stack([full_mask, subset_mask])
        if self.blocks:
            e = self.blocks[0].forward_two_masks(e, full_mask, subset_mask)
        else:
            e = e.expand(2, *e.shape)
        e = e.flatten(0, 1)
        flat_masks = masks.flatten(0, 1)
        for block in self.blocks[1:]:
            e = block(e, flat_masks)
        pooled = torch.where(flat_masks[..., None], self.norm_out(e), 0.0).sum(-2)
        heads = self.rho(pooled).unflatten(0, (2, h.shape[0]))
        return self.head_to_distribution(heads[0]), self.head_to_distribution(heads[1])


@AGGREGATORS.register("self_attention_mixture")
class SelfAttentionMixture(SelfAttention):
    """Self-attention with a K-component mixture head."""

    mixture_head = True
