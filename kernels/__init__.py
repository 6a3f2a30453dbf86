"""Fused ops for mmtrain, each beside its plain-PyTorch reference.

Importing this package registers every op in `mmtrain.registry.OPS`; `mmtrain.ops` dispatches.
"""

from __future__ import annotations

from mmtrain.kernels.reference import (
    masked_mixture_log_prob_reference,
    masked_set_attention_reference,
)
from mmtrain.ops import KernelOp
from mmtrain.registry import OPS

OPS.register(
    "masked_set_attention",
    KernelOp("masked_set_attention", masked_set_attention_reference),
)
OPS.register(
    "masked_mixture_log_prob",
    KernelOp("masked_mixture_log_prob", masked_mixture_log_prob_reference),
)

__all__ = ["masked_mixture_log_prob_reference", "masked_set_attention_reference"]
