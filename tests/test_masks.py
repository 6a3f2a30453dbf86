"""Subset sampler statistics (docs/math.md §2.3)."""

from __future__ import annotations

import pytest
import torch

from mmtrain.errors import ConfigError
from mmtrain.masks import sample_subset_mask


def test_faithful_sampler_statistics() -> None:
    gen = torch.Generator().manual_seed(0)
    avail = torch.ones(200_000, 3, dtype=torch.bool)
    avail[::4, 1] = False
    m = sample_subset_mask(avail, None, "faithful", gen)
    assert not (m & ~avail).any()
    assert m[avail].float().mean().item() == pytest.approx(0.5, abs=0.005)
    full = avail.all(1)
    empty = ~m[full].any(1)
    assert empty.float().mean().item() == pytest.approx(1 / 8, abs=0.005)
    everything = m[full].all(1)
    assert everything.float().mean().item() == pytest.approx(1 / 8, abs=0.005)


def test_uniform_size_sampler_gives_uniform_sizes() -> None:
    gen = torch.Generator().manual_seed(1)
    avail = torch.ones(100_000, 4, dtype=torch.bool)
    sizes = sample_subset_mask(avail, None, "uniform-size", gen).sum(1)
    # Per-example u ~ U(0,1): P(size = k) = ∫ C(4,k) u^k (1-u)^(4-k) du = 1/5 for every k.
    for k in range(5):
        assert (sizes == k).float().mean().item() == pytest.approx(0.2, abs=0.01)


def test_mask_prob_zero_and_one() -> None:
    avail = torch.rand(10, 3) < 0.5
    assert torch.equal(sample_subset_mask(avail, 0), avail)
    assert not sample_subset_mask(avail, 1).any()
    with pytest.raises(ConfigError):
        sample_subset_mask(avail, None, "other")
