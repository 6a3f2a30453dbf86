"""Plain-PyTorch references of the fused ops: the ground truth for tests and benchmarks."""

from __future__ import annotations

import math

import torch


def masked_set_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Attention within each set with SPEC §3.6 masking.

    q, k, v: [B, H, M, Dh]; mask: [B, M] bool. A score is kept where both the query and the
    key are present and replaced by the dtype's most negative finite value otherwise, so a
    present query never attends to an absent key, an absent query attends uniformly to all
    keys (its output is ignored downstream), and an all-false set stays finite.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    pair = mask[:, None, :, None] & mask[:, None, None, :]
    scores = torch.where(pair, scores, torch.finfo(scores.dtype).min)
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def _component_log_density(
    z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, family: str
) -> torch.Tensor:
    if family == "normal":
        return (
            -0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)
        )
    if family == "laplace":
        return -torch.abs(z - loc) / scale - torch.log(2 * scale)
    raise ValueError(f"unknown family {family!r}; choose 'normal' or 'laplace'")


def masked_mixture_log_prob_reference(
    z: torch.Tensor,
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    logits: torch.Tensor,
    component_mask: torch.Tensor,
    family: str = "normal",
    min_scale: float = 0.0,
) -> torch.Tensor:
    """log density of a diagonal mixture with masked components.

    z: [L, B, d]; loc, log_scale: [B, C, d]; logits, component_mask: [B, C] → [L, B].
    Absent components get log-weight -inf, never a clamped probability.
    """
    scale = min_scale + torch.exp(log_scale)
    log_weights = torch.log_softmax(
        torch.where(component_mask, logits, float("-inf")), dim=-1
    )
    per_component = _component_log_density(z[..., None, :], loc, scale, family).sum(-1)
    return torch.logsumexp(log_weights + per_component, dim=-1)
