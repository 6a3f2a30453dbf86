"""Subset sampling ρ(S) (docs/math.md §2.3): which observed modalities the partial encoder sees."""

from __future__ import annotations

import torch
from torch import Tensor

from mmtrain.errors import ConfigError

SUBSET_MODES = ("faithful", "uniform-size")


def sample_subset_mask(
    avail: Tensor,
    mask_prob: float | None = None,
    mode: str = "faithful",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample the subset mask m ≤ avail, `[B, M]` bool.

    - `mask_prob` 0 or 1: m = Bernoulli(1 − mask_prob) ⊙ a (0 gives m = a, 1 gives S = ∅).
    - otherwise, `mode="faithful"`: the reference draws u ~ U(0, 1) per entry and then
      Bernoulli(1 − u), which is exactly iid Bernoulli(½): S uniform over all subsets of the
      observed modalities, ∅ and the full set included.
    - `mode="uniform-size"`: one u per example, so subset sizes are uniform (the likely intent).
    """
    avail = avail.bool()
    if mask_prob is not None and mask_prob in (0, 1):
        if mask_prob == 0:
            return avail.clone()
        return torch.zeros_like(avail)
    if mask_prob is not None and not 0 < mask_prob < 1:
        raise ConfigError(f"mask_prob must lie in [0, 1], got {mask_prob}")
    if mode == "faithful":
        keep_prob = torch.full(avail.shape, 0.5, device=avail.device)
    elif mode == "uniform-size":
        per_example = torch.rand(avail.shape[0], 1, device=avail.device, generator=generator)
        keep_prob = (1 - per_example).expand(avail.shape)
    else:
        raise ConfigError(f"unknown subset mode {mode!r}; choose one of {SUBSET_MODES}")
    draw = torch.rand(avail.shape, device=avail.device, generator=generator) < keep_prob
    return draw & avail
