"""Plain-PyTorch references of the fused ops: the ground truth for tests and benchmarks."""

from __future__ import annotations

import math

import torch


def masked_set_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Attention within each set with docs/math.md §3.6 masking.

    q, k, v: [B, H, M, Dh]; mask: [B, M] bool. The rows of absent elements are replaced by
    zeros first (`torch.where`, so NaN or inf there never reaches the result or a gradient:
    0 · NaN would be NaN). A score is kept where both the query and the key are present and
    replaced by the dtype's most negative finite value otherwise, so a present query never
    attends to an absent key, an absent query attends uniformly to all keys (its output, the
    mean of the present values over M, is ignored downstream), and an all-false set stays
    finite. Gradients into absent rows are exactly zero.
    """
    present = mask[:, None, :, None]
    q = torch.where(present, q, 0.0)
    k = torch.where(present, k, 0.0)
    v = torch.where(present, v, 0.0)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    pair = mask[:, None, :, None] & mask[:, None, None, :]
    scores = torch.where(pair, scores, torch.finfo(scores.dtype).min)
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def masked_set_attention_pooled_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """`masked_set_attention_reference` summed over the present queries → [B, H, Dh].

    Pooling uses `torch.where`, never a product with the mask (NaN · 0 = NaN); an all-false
    set pools to zeros.
    """
    out = masked_set_attention_reference(q, k, v, mask)
    return torch.where(mask[:, None, :, None], out, 0.0).sum(dim=2)


def masked_set_attention_two_mask_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask_a: torch.Tensor,
    mask_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`masked_set_attention_reference` under two masks (e.g. the full and the sampled
    subset mask of the masked objective) over the same q, k, v → (out_a, out_b)."""
    return (
        masked_set_attention_reference(q, k, v, mask_a),
        masked_set_attention_reference(q, k, v, mask_b),
    )


def _component_log_density(
    z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, family: str
) -> torch.Tensor:
    if family == "normal":
        return -0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)
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
    Component scale = min_scale + exp(log_scale). Absent components get log-weight -inf, never
    a clamped probability, and contribute exactly nothing: not even non-finite parameters of
    an absent component reach the result or any gradient. A row with no present component
    has density 0: the result is -inf and every gradient into that row is zero (no NaN).
    """
    present = component_mask[..., None]
    loc = torch.where(present, loc, 0.0)
    log_scale = torch.where(present, log_scale, 0.0)
    any_present = component_mask.any(dim=-1, keepdim=True)
    # A row without present components would give log_softmax(all -inf) = NaN: use 0 logits
    # there and mask the result instead.
    logits = torch.where(component_mask, logits, float("-inf"))
    logits = torch.where(any_present, logits, 0.0)
    log_weights = torch.where(component_mask, torch.log_softmax(logits, dim=-1), float("-inf"))
    scale = min_scale + torch.exp(log_scale)
    per_component = _component_log_density(z[..., None, :], loc, scale, family).sum(-1)
    terms = log_weights + per_component
    rows = any_present.squeeze(-1).expand(terms.shape[:-1])
    terms = torch.where(rows[..., None], terms, 0.0)
    return torch.where(rows, torch.logsumexp(terms, dim=-1), float("-inf"))
