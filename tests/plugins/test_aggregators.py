"""Aggregator properties (docs/math.md §3, §8): golden PoE values, MoE weights, permutation
invariance, blindness to masked rows, finite empty sets, gradients, head layout."""

from __future__ import annotations

import math

import pytest
import torch

from mmtrain.distributions import Diagonal, Mixture
from mmtrain.errors import ConfigError, PluginError
from mmtrain.priors import FixedPrior, MixturePrior
from mmtrain.registry import AGGREGATORS
from tests.helpers import LATENT, build_small_model, random_batch

ALL = [
    "poe",
    "moe",
    "sum_pooling",
    "self_attention",
    "sum_pooling_mixture",
    "self_attention_mixture",
]


def test_registry_lists_all_six() -> None:
    assert set(ALL) <= set(AGGREGATORS.names())


def test_unknown_aggregator_lists_known_and_closest() -> None:
    with pytest.raises(PluginError, match="did you mean 'sum_pooling'.*Known: moe, poe"):
        AGGREGATORS.get("sum_pool")


@pytest.mark.parametrize("bug,mean", [(False, 2.1650033267), (True, 0.2932097498)])
def test_poe_golden_values(bug: bool, mean: float) -> None:
    agg = AGGREGATORS.get("poe")(2, 1, min_scale=5e-4, poe_reference_bug=bug).double()
    h = torch.tensor([[[1.0, 0.0], [3.0, math.log(0.5)]]], dtype=torch.float64)
    q = agg(h, torch.ones(1, 2, dtype=torch.bool), FixedPrior(1).double())
    assert q.loc.item() == pytest.approx(mean, abs=1e-6)
    assert q.log_scale.item() == pytest.approx(-0.8943829751, abs=1e-6)
    assert q.scale.item() == pytest.approx(0.4093597975, abs=1e-6)
    assert math.exp(-2 * q.log_scale.item()) == pytest.approx(5.9820657430, abs=1e-6)


def test_poe_empty_set_is_prior_expert() -> None:
    agg = AGGREGATORS.get("poe")(2, 1, min_scale=0.0).double()
    h = torch.randn(1, 2, 2, dtype=torch.float64)
    q = agg(h, torch.zeros(1, 2, dtype=torch.bool), FixedPrior(1).double())
    assert q.loc.item() == 0
    assert q.scale.item() ** 2 == pytest.approx(1.001, abs=1e-9)


def test_poe_rejects_mixture_prior() -> None:
    with pytest.raises(ConfigError, match="single-component prior"):
        AGGREGATORS.get("poe")(2, 1, num_components=5)


def test_moe_weights() -> None:
    agg = AGGREGATORS.get("moe")(4, 2)
    prior = MixturePrior(2, 1)
    h = torch.randn(2, 3, 4)
    q = agg(h, torch.tensor([[True, False, True], [False, False, False]]), prior)
    weights = torch.exp(q.log_weights)
    assert torch.allclose(weights[0], torch.tensor([0.5, 0, 0.5, 0]))
    assert torch.allclose(weights[1], torch.tensor([0, 0, 0, 1.0]))
    assert q.log_weights[0, 1] == float("-inf")  # masked experts have -inf, not a clamped log


def test_moe_prior_fallback_uses_softmax_of_prior_logits_without_gradient() -> None:
    prior = MixturePrior(2, 3)
    with torch.no_grad():
        prior.prior_logits.copy_(torch.tensor([0.0, 1.0, 2.0]))
    agg = AGGREGATORS.get("moe")(4, 2, num_components=3)
    q = agg(torch.randn(1, 2, 4), torch.zeros(1, 2, dtype=torch.bool), prior)
    expected = torch.cat([torch.zeros(2), torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)])
    assert torch.allclose(torch.exp(q.log_weights[0]), expected)
    assert not q.logits.requires_grad


def _params(q: Diagonal | Mixture) -> list[torch.Tensor]:
    if isinstance(q, Mixture):
        return [q.loc, q.log_scale, q.log_weights]
    return [q.loc, q.log_scale]


def _agg_model(name: str, components: int):
    return build_small_model(name, num_modalities=4, num_components=components, dtype=torch.float64)


CASES = [(name, 1) for name in ALL] + [
    ("moe", 3),
    ("sum_pooling_mixture", 3),
    ("self_attention_mixture", 3),
]


@pytest.mark.parametrize("name,components", CASES)
def test_permutation_invariance(name: str, components: int) -> None:
    model = _agg_model(name, components)
    h = torch.randn(7, 4, model.aggregator.feature_dim, dtype=torch.float64)
    mask = torch.rand(7, 4) < 0.6
    perm = torch.tensor([2, 0, 3, 1])
    q = model.posterior(h, mask)
    q_perm = model.posterior(h[:, perm], mask[:, perm])
    z = torch.randn(5, 7, LATENT, dtype=torch.float64)
    assert torch.allclose(q.log_prob(z), q_perm.log_prob(z), atol=1e-10)
    if name != "moe":
        for a, b in zip(_params(q), _params(q_perm)):
            assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("name,components", CASES)
def test_blind_to_masked_features(name: str, components: int) -> None:
    model = _agg_model(name, components)
    h = torch.randn(6, 4, model.aggregator.feature_dim, dtype=torch.float64)
    mask = torch.rand(6, 4) < 0.5
    changed = torch.where(mask[..., None], h, 1e3 * torch.randn_like(h))
    z = torch.randn(3, 6, LATENT, dtype=torch.float64)
    q, q_changed = model.posterior(h, mask), model.posterior(changed, mask)
    assert torch.allclose(q.log_prob(z), q_changed.log_prob(z), atol=1e-9)


@pytest.mark.parametrize("name,components", CASES)
def test_empty_set_is_finite_and_data_independent(name: str, components: int) -> None:
    model = _agg_model(name, components)
    empty = torch.zeros(3, 4, dtype=torch.bool)
    h1 = torch.randn(3, 4, model.aggregator.feature_dim, dtype=torch.float64)
    h2 = torch.randn_like(h1) * 50
    q1, q2 = model.posterior(h1, empty), model.posterior(h2, empty)
    z = torch.randn(4, 3, LATENT, dtype=torch.float64)
    assert torch.isfinite(q1.log_prob(z)).all()
    assert torch.allclose(q1.log_prob(z), q2.log_prob(z))
    assert torch.isfinite(q1.rsample(2)).all()


@pytest.mark.parametrize("name,components", CASES)
def test_every_parameter_gets_a_gradient(name: str, components: int) -> None:
    from mmtrain.objectives import masked_objective

    model = _agg_model(name, components)
    batch = random_batch(model, 16, seed=1, avail_prob=0.8)
    torch.manual_seed(0)
    empty_subset = torch.zeros_like(batch.avail)
    out = masked_objective(model, batch, subset_mask=torch.rand(batch.avail.shape) < 0.5)
    out.loss.backward()
    # The empty set reaches parameters that only q(z|∅) uses (MoE's prior rows).
    masked_objective(model, batch, subset_mask=empty_subset).loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname


def test_mixture_head_layout() -> None:
    agg = AGGREGATORS.get("sum_pooling_mixture")(
        4, 2, num_components=3, pooling_size=4, hidden_size=4
    )
    out = torch.arange(15.0)[None]
    q = agg.head_to_distribution(out)
    assert torch.equal(q.loc[0, 0], torch.tensor([0.0, 1.0]))
    assert torch.equal(q.log_scale[0, 0], torch.tensor([2.0, 3.0]))
    assert torch.equal(q.loc[0, 2], torch.tensor([8.0, 9.0]))
    assert torch.equal(q.logits[0], torch.tensor([12.0, 13.0, 14.0]))


def test_attention_is_nan_free_for_all_masked_rows() -> None:
    model = _agg_model("self_attention", 1)
    h = torch.randn(2, 4, model.aggregator.feature_dim, dtype=torch.float64, requires_grad=True)
    q = model.posterior(h, torch.tensor([[False] * 4, [True, False, False, False]]))
    loss = q.log_prob(torch.zeros(1, 2, LATENT, dtype=torch.float64)).sum()
    loss.backward()
    assert torch.isfinite(h.grad).all()


@pytest.mark.parametrize("name,components", CASES)
@pytest.mark.parametrize("objective", ["masked", "mixture"])
def test_example_with_nothing_observed_is_finite(
    name: str, components: int, objective: str
) -> None:
    """A row with no observed modality: q(z|x) = q(z|∅) (prior expert, prior mixture or ρ(0));
    its reconstruction terms are empty, its loss and every gradient finite."""
    from mmtrain.registry import OBJECTIVES

    model = _agg_model(name, components)
    batch = random_batch(model, 8, seed=5)
    batch.avail[3] = False
    batch.x["m1"][3] = float("nan")  # missing values may hold anything
    out = OBJECTIVES.get(objective)(model, batch, samples=2)
    assert torch.isfinite(out.per_example).all()
    for term in ("R_marg", "R_cross"):
        assert torch.all(getattr(out.terms, term)[:, 3] == 0)
    out.loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is None or torch.isfinite(param.grad).all(), pname


@pytest.mark.parametrize("name", ["sum_pooling", "self_attention", "self_attention_mixture"])
@pytest.mark.parametrize("depth", [1, 2])
def test_fused_pair_equals_two_separate_passes(name: str, depth: int) -> None:
    from mmtrain.registry import AGGREGATORS

    options = {"pooling_size": 8, "hidden_size": 8}
    if name.startswith("self_attention"):
        options |= {"attention_size": 8, "num_heads": 2, "depth": depth}
    torch.manual_seed(0)
    agg = AGGREGATORS.get(name)(6, 3, 2 if "mixture" in name else 1, **options).double()
    h = torch.randn(5, 4, 6, dtype=torch.float64)
    full = torch.rand(5, 4) < 0.8
    subset = full & (torch.rand(5, 4) < 0.5)
    prior = FixedPrior(3).double()
    pair = agg.forward_pair(h, full, subset, prior)
    separate = (agg(h, full, prior), agg(h, subset, prior))
    z = torch.randn(2, 5, 3, dtype=torch.float64)
    for fused, single in zip(pair, separate):
        assert torch.allclose(fused.log_prob(z), single.log_prob(z), atol=1e-10)
