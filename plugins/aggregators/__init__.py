"""Built-in aggregators: PoE, MoE, DeepSets sum pooling, set self-attention, and mixtures."""

from mmtrain.plugins.aggregators import experts, self_attention, sum_pooling

__all__ = ["experts", "self_attention", "sum_pooling"]
