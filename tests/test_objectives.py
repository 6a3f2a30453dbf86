"""docs/math.md §2.1 golden values, §2.2 term structure and §2.5 STL, in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmtrain.distributions import Diagonal, log_density
from mmtrain.objectives import (
    Latents,
    masked_objective,
    masked_value,
    mixture_objective,
    mixture_value,
)
from mmtrain.priors import FixedPrior

X = torch.tensor([0.3, 1.7], dtype=torch.float64)


@pytest.fixture(autouse=True)
def float64_default():
    """The golden values need float64; restore the default for the rest of the session."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


LOG_P_X = -2.5135442649
LOG_P_X1 = -1.1516710873
LOG_P_X2_GIVEN_X1 = -1.3618731777
J_MIX_S1 = -2.7822762871


def bound_terms(
    objective: str,
    z_subset: torch.Tensor,
    z_full: torch.Tensor,
    q_full: Diagonal,
    q_subset: Diagonal,
    prior_log_prob,  # noqa: ANN001
    reconstruct,  # noqa: ANN001
    avail: torch.Tensor,
    subset_mask: torch.Tensor,
    weights: torch.Tensor,
):  # noqa: ANN201
    """`masked_value` / `mixture_value` on given samples and posteriors."""
    latents = Latents({}, avail, subset_mask & avail, weights, q_subset, z_subset, q_full, z_full)
    value_fn = masked_value if objective == "masked" else mixture_value
    return value_fn(latents, reconstruct, prior_log_prob)


def toy_reconstruct(z: torch.Tensor) -> torch.Tensor:
    """log p(x_1 | z), log p(x_2 | z) for x_1 = z + N(0, .5), x_2 = 2z + 1 + N(0, 1)."""
    z = z[..., 0]
    x1 = log_density(X[0], z, torch.tensor(math.sqrt(0.5)), "normal")
    x2 = log_density(X[1], 2 * z + 1, torch.tensor(1.0), "normal")
    return torch.stack([x1, x2], -1)


def exact_posterior(subset: tuple[int, ...]) -> Diagonal:
    precision, weighted = 1.0, 0.0
    if 0 in subset:
        precision, weighted = precision + 2.0, weighted + X[0].item() / 0.5
    if 1 in subset:
        precision, weighted = precision + 4.0, weighted + 2 * (X[1].item() - 1)
    loc = torch.tensor([weighted / precision])
    return Diagonal(loc, torch.tensor([-0.5 * math.log(precision)]), "normal", 0.0)


def toy_terms(objective: str, subset: tuple[int, ...], z_s: float, z_f: float) -> torch.Tensor:
    prior = FixedPrior(1)
    mask = torch.tensor([[i in subset for i in range(2)]])
    value, _ = bound_terms(
        objective,
        torch.tensor([[[z_s]]]),
        torch.tensor([[[z_f]]]),
        exact_posterior((0, 1)),
        exact_posterior(subset),
        prior.log_prob,
        toy_reconstruct,
        torch.ones(1, 2, dtype=torch.bool),
        mask,
        torch.ones(2),
    )
    return value


def test_exact_posteriors_match_spec() -> None:
    assert exact_posterior((0,)).loc.item() == pytest.approx(0.2)
    assert exact_posterior((0,)).scale.item() ** 2 == pytest.approx(1 / 3)
    assert exact_posterior((0, 1)).loc.item() == pytest.approx(2 / 7)
    assert exact_posterior((0, 1)).scale.item() ** 2 == pytest.approx(1 / 7)


@pytest.mark.parametrize("subset", [(), (0,), (1,), (0, 1)])
@pytest.mark.parametrize("z", [-1.0, 0.2, 2.5, 7.0])
def test_masked_single_sample_equals_log_evidence(subset: tuple[int, ...], z: float) -> None:
    assert toy_terms("masked", subset, z, z).item() == pytest.approx(LOG_P_X, abs=1e-6)
    # z_S and z_F independent: still exact, the two halves are separately constant.
    assert toy_terms("masked", subset, z, -z + 0.3).item() == pytest.approx(LOG_P_X, abs=1e-6)


def test_masked_halves_are_marginal_and_conditional() -> None:
    _, terms = bound_terms(
        "masked",
        torch.tensor([[[0.7]]]),
        torch.tensor([[[-0.4]]]),
        exact_posterior((0, 1)),
        exact_posterior((0,)),
        FixedPrior(1).log_prob,
        toy_reconstruct,
        torch.ones(1, 2, dtype=torch.bool),
        torch.tensor([[True, False]]),
        torch.ones(2),
    )
    marginal = terms.R_marg - terms.Q_S + terms.P_S
    conditional = terms.R_comp - terms.Q_F + terms.Q_SF
    assert marginal.item() == pytest.approx(LOG_P_X1, abs=1e-6)
    assert conditional.item() == pytest.approx(LOG_P_X2_GIVEN_X1, abs=1e-6)


def expected_mixture_value(subset: tuple[int, ...]) -> float:
    """E_{q(z|x_S)} of the mixture integrand by Gauss–Hermite quadrature (exact: quadratic)."""
    q = exact_posterior(subset)
    nodes, weights = np.polynomial.hermite.hermgauss(20)
    z = q.loc.item() + math.sqrt(2) * q.scale.item() * torch.tensor(nodes)
    values = torch.stack([toy_terms("mixture", subset, zi.item(), 0.0)[0, 0] for zi in z])
    return float((values * torch.tensor(weights)).sum() / math.sqrt(math.pi))


def kl_normal(m1: float, v1: float, m2: float, v2: float) -> float:
    return 0.5 * (math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)


def test_mixture_objective_golden_value() -> None:
    assert expected_mixture_value((0,)) == pytest.approx(J_MIX_S1, abs=1e-6)


@pytest.mark.parametrize("subset", [(), (0,), (1,), (0, 1)])
def test_mixture_objective_gap_is_kl_to_full_posterior(subset: tuple[int, ...]) -> None:
    q, full = exact_posterior(subset), exact_posterior((0, 1))
    gap = kl_normal(q.loc.item(), q.scale.item() ** 2, full.loc.item(), full.scale.item() ** 2)
    assert expected_mixture_value(subset) == pytest.approx(LOG_P_X - gap, abs=1e-6)


def tiny_model(aggregator: str = "sum_pooling"):
    from tests.helpers import build_small_model

    return build_small_model(aggregator, dtype=torch.float64)


def test_stl_gradient_structure() -> None:
    """Q_S reaches the encoder only through z_S; Q_SF reaches q(·|x_S)'s parameters."""
    from mmtrain.masks import sample_subset_mask
    from tests.helpers import random_batch

    model, batch = tiny_model(), None
    batch = random_batch(model, 6, seed=0)
    h = model.encode_features(model.clean(batch))
    subset = sample_subset_mask(batch.avail, None, generator=torch.Generator().manual_seed(1))
    subset[:, 0] = True
    q_full, q_subset = model.posterior_pair(h, batch.avail, subset)
    z_s = q_subset.rsample(1)
    z_fixed = z_s.detach()
    stl_value = q_subset.detached().log_prob(z_fixed).sum()
    assert not stl_value.requires_grad  # no path except through z
    live = q_subset.log_prob(z_fixed).sum()
    grads = torch.autograd.grad(
        live, list(model.aggregator.parameters()), allow_unused=True, retain_graph=True
    )
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    path = q_subset.detached().log_prob(z_s).sum()
    grads_path = torch.autograd.grad(
        path, list(model.aggregator.parameters()), allow_unused=True, retain_graph=True
    )
    assert any(g is not None and g.abs().sum() > 0 for g in grads_path)
    q_full_sample = q_full.rsample(1).detach()
    q_sf = q_subset.log_prob(q_full_sample).sum()
    grads_sf = torch.autograd.grad(
        q_sf, list(model.aggregator.parameters()), allow_unused=True, retain_graph=True
    )
    assert any(g is not None and g.abs().sum() > 0 for g in grads_sf)


@pytest.mark.parametrize("objective", [masked_objective, mixture_objective])
def test_objective_terms_and_loss(objective) -> None:
    from tests.helpers import random_batch

    model = tiny_model()
    batch = random_batch(model, 5, seed=3)
    out = objective(model, batch, samples=3)
    assert out.loss.shape == ()
    assert torch.isfinite(out.loss)
    for value in out.terms.named().values():
        assert value.shape == (3, 5)
    # Training loss: −Σ_b logsumexp_l J (no −log L); reported value: logsumexp − log L.
    assert out.loss.item() == pytest.approx(-(out.per_example + math.log(3)).sum().item())
    value = out.logged()[f"{out.objective}_objective"]
    assert value == pytest.approx(out.per_example.mean().item())
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_full_subset_makes_conditional_term_zero() -> None:
    from tests.helpers import random_batch

    model = tiny_model()
    batch = random_batch(model, 4, seed=2)
    out = masked_objective(model, batch, subset_mask=batch.avail.clone())
    assert torch.allclose(out.terms.Q_SF, out.terms.Q_F)
    assert torch.all(out.terms.R_comp == 0)


def test_reported_objective_is_average_for_one_sample_and_subtracts_log_l() -> None:
    """With L samples the reported value is logsumexp_l J − log L: for L = 1 the value itself,
    and for L > 1 never above the largest J nor below the mean J (Jensen)."""
    from tests.helpers import random_batch

    model = tiny_model()
    batch = random_batch(model, 6, seed=4)
    torch.manual_seed(0)
    subset = batch.avail & torch.tensor([True, False, True])
    single = masked_objective(model, batch, samples=1, subset_mask=subset)
    assert single.loss.item() == pytest.approx(-single.per_example.sum().item())
    many = masked_objective(model, batch, samples=8, subset_mask=subset)
    j = (
        sum(
            getattr(many.terms, name) * sign
            for name, sign in (("R_marg", 1), ("P_S", 1), ("Q_S", -1), ("R_comp", 1), ("Q_SF", 1))
        )
        - many.terms.Q_F
    )
    assert torch.allclose(many.per_example, torch.logsumexp(j, 0) - math.log(8))
    assert (many.per_example <= j.max(0).values + 1e-9).all()
    assert (many.per_example >= j.mean(0) - 1e-9).all()


@pytest.mark.parametrize("z", [-1.0, 0.2, 2.5])
def test_elbo_equals_log_evidence_for_exact_posterior(z: float) -> None:
    """With q(z|x) = p(z|x), every single-sample ELBO is log p(x) (paper toy numbers)."""
    _, terms = bound_terms(
        "masked",
        torch.tensor([[[0.4]]]),
        torch.tensor([[[z]]]),
        exact_posterior((0, 1)),
        exact_posterior((0,)),
        FixedPrior(1).log_prob,
        toy_reconstruct,
        torch.ones(1, 2, dtype=torch.bool),
        torch.tensor([[True, False]]),
        torch.tensor([0.5, 3.0]),  # reconstruction weights do not enter the ELBO
    )
    assert terms.elbo.item() == pytest.approx(LOG_P_X, abs=1e-9)
    assert not terms.elbo.requires_grad


def test_elbo_gap_is_kl_to_posterior() -> None:
    """For q(z|x) ≠ p(z|x) the mean ELBO is log p(x) − KL(q ‖ p(z|x)) < log p(x): checked
    against the closed form within Monte-Carlo error."""
    full = exact_posterior((0, 1))
    q = Diagonal(full.loc + 0.3, full.log_scale + 0.4, "normal", 0.0)
    torch.manual_seed(1)
    z_full = q.rsample(20000)[:, None, :]
    _, terms = bound_terms(
        "masked",
        torch.zeros(20000, 1, 1),
        z_full,
        q,
        exact_posterior((0,)),
        FixedPrior(1).log_prob,
        toy_reconstruct,
        torch.ones(1, 2, dtype=torch.bool),
        torch.tensor([[True, False]]),
        torch.ones(2),
    )
    elbo = terms.elbo[:, 0]
    gap = kl_normal(q.loc.item(), q.scale.item() ** 2, full.loc.item(), full.scale.item() ** 2)
    stderr = elbo.std().item() / math.sqrt(elbo.numel())
    assert gap > 0.05
    assert elbo.mean().item() == pytest.approx(LOG_P_X - gap, abs=4 * stderr)


def test_model_elbo_below_exact_log_likelihood() -> None:
    """A (randomly initialised) linear-Gaussian model: the mean ELBO of both objectives is
    below the exact log p(x) of the model, and the two estimate the same quantity."""
    from mmtrain.evaluation.simulated import exact_subset_log_likelihood, is_linear_gaussian
    from mmtrain.evaluation.subsets import Subset
    from tests.helpers import random_batch

    model = tiny_model()
    assert is_linear_gaussian(model)
    batch = random_batch(model, 4, seed=5, avail_prob=1.0)
    every = Subset(tuple(range(model.num_modalities)), tuple(model.modality_names))
    exact = exact_subset_log_likelihood(model, batch, every)
    torch.manual_seed(2)
    with torch.no_grad():
        masked = masked_objective(model, batch, samples=4000)
        mixture = mixture_objective(model, batch, samples=4000, elbo=True)
        mixture_default = mixture_objective(model, batch, samples=2)
    assert mixture_default.elbo is None and "elbo" not in mixture_default.logged()
    masked_elbo = masked.elbo
    assert masked_elbo is not None and mixture.elbo is not None
    assert masked_elbo.shape == (4,)
    assert (masked_elbo < exact - 0.01).all()
    assert (mixture.elbo < exact - 0.01).all()
    assert torch.allclose(masked_elbo, mixture.elbo, atol=0.2)
    assert masked.logged()["elbo"] == pytest.approx(masked_elbo.mean().item())
