"""Distributions against torch.distributions and brute force; implicit reparameterisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from mmtrain.distributions import Diagonal, Mixture


@pytest.mark.parametrize("family", ["normal", "laplace"])
def test_diagonal_log_prob_matches_torch(family: str) -> None:
    loc, log_scale = torch.randn(4, 3), torch.randn(4, 3)
    q = Diagonal(loc, log_scale, family, 1e-3)
    z = torch.randn(5, 4, 3)
    cls = D.Normal if family == "normal" else D.Laplace
    expected = cls(loc, 1e-3 + log_scale.exp()).log_prob(z).sum(-1)
    assert torch.allclose(q.log_prob(z), expected, atol=1e-5)


@pytest.mark.parametrize("family", ["normal", "laplace"])
def test_diagonal_sample_moments(family: str) -> None:
    torch.manual_seed(0)
    q = Diagonal(torch.tensor([1.0, -2.0]), torch.log(torch.tensor([0.5, 2.0])), family)
    z = q.rsample(200_000)
    assert torch.allclose(z.mean(0), q.loc, atol=0.02)
    variance = q.scale**2 * (1 if family == "normal" else 2)
    assert torch.allclose(z.var(0), variance, rtol=0.03)


def test_stl_copy_detaches_parameters_only() -> None:
    loc = torch.randn(3, requires_grad=True)
    q = Diagonal(loc, torch.zeros(3))
    assert not q.detached().loc.requires_grad
    assert torch.equal(q.detached().log_prob(torch.ones(3)), q.log_prob(torch.ones(3)))


def test_mixture_log_prob_brute_force_with_masked_component() -> None:
    loc, log_scale = torch.randn(2, 3, 4), 0.3 * torch.randn(2, 3, 4)
    logits = torch.randn(2, 3)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    q = Mixture(loc, log_scale, logits, mask)
    z = torch.randn(6, 2, 4)
    for b in range(2):
        present = mask[b]
        mix = D.MixtureSameFamily(
            D.Categorical(logits=logits[b][present]),
            D.Independent(D.Normal(loc[b][present], log_scale[b][present].exp()), 1),
        )
        assert torch.allclose(q.log_prob(z)[:, b], mix.log_prob(z[:, b]), atol=1e-5)
    # A masked component far away must not leak: probabilities clamp to ~1e-7 would.
    far = Mixture(
        torch.tensor([[[0.0], [100.0]]]),
        torch.zeros(1, 2, 1),
        torch.zeros(1, 2),
        torch.tensor([[True, False]]),
    )
    expected = D.Normal(0.0, 1.0).log_prob(torch.tensor(100.0))
    assert far.log_prob(torch.tensor([[[100.0]]])).item() == pytest.approx(expected.item())


def test_mixture_with_no_component_is_finite_to_sample() -> None:
    q = Mixture(
        torch.zeros(2, 2, 3),
        torch.zeros(2, 2, 3),
        torch.zeros(2, 2),
        torch.tensor([[False, False], [True, True]]),
    )
    assert torch.isfinite(q.rsample(4)).all()


@pytest.mark.parametrize("family", ["normal", "laplace"])
def test_implicit_reparameterisation_gradient_of_mean(family: str) -> None:
    """∂E[z]/∂λ and ∂E[z]/∂μ from path-wise gradients match the analytic values."""
    torch.manual_seed(0)
    loc = torch.tensor([[-1.0], [2.0]], requires_grad=True)
    logits = torch.tensor([0.3, -0.2], requires_grad=True)
    log_scale = torch.log(torch.tensor([[0.7], [1.2]])).requires_grad_()
    q = Mixture(loc, log_scale, logits, None, family, 0.0, "implicit")
    z = q.rsample(400_000)
    z.mean().backward()
    pi = torch.softmax(logits.detach(), 0)
    mu = loc.detach()[:, 0]
    analytic_logits = pi * (mu - (pi * mu).sum())
    assert torch.allclose(logits.grad, analytic_logits, atol=0.02)
    assert torch.allclose(loc.grad[:, 0], pi, atol=0.02)
    assert log_scale.grad.abs().max() < 0.03  # E[z] does not depend on the scales


def test_implicit_reparameterisation_multivariate_second_moment() -> None:
    """d = 2: gradient of E[z_1 z_2] w.r.t. the logits matches the analytic value."""
    torch.manual_seed(1)
    loc = torch.tensor([[-1.0, 2.0], [1.5, -0.5]])
    logits = torch.tensor([0.1, -0.4], requires_grad=True)
    q = Mixture(loc, torch.zeros(2, 2), logits, None, "normal", 0.0, "implicit")
    z = q.rsample(400_000)
    (z[:, 0] * z[:, 1]).mean().backward()
    pi = torch.softmax(logits.detach(), 0)
    per_component = loc[:, 0] * loc[:, 1]
    analytic = pi * (per_component - (pi * per_component).sum())
    assert torch.allclose(logits.grad, analytic, atol=0.03)
    assert math.isfinite(float(z.detach().sum()))
