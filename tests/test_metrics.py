"""Metrics (docs/math.md §4.1, §4.5) against SciPy, closed forms and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from mmtrain.errors import ConfigError, DataError
from mmtrain.metrics import (
    compute_mcc,
    gaussian_log_likelihood,
    linear_gaussian_log_likelihood,
    linear_gaussian_posterior,
    mean_corr_coef,
    ppca_mle,
    rdc,
)
from mmtrain.simulations import make_linear_gaussian


def _random_spd(rng, dim):
    a = rng.normal(size=(dim, dim))
    return a @ a.T + 0.5 * np.eye(dim)


@pytest.fixture(scope="module")
def linear_data():
    data = make_linear_gaussian(
        num_modalities=2, num_examples=3000, latent_block=2, x_dim_max=16, seed=3
    )
    return (
        np.concatenate(data.x, axis=1),
        np.concatenate(data.loadings),
        np.concatenate(data.offsets),
        data.latent_dim,
    )


# ----------------------------------------------------------------------------- likelihoods


def test_gaussian_log_likelihood_matches_scipy():
    rng = np.random.default_rng(0)
    cov = _random_spd(rng, 7)
    mean = rng.normal(size=7)
    x = rng.normal(size=(50, 7)) * 3
    expected = multivariate_normal(mean, cov).logpdf(x)
    np.testing.assert_allclose(gaussian_log_likelihood(x, mean, cov), expected, rtol=1e-12)


def test_gaussian_log_likelihood_rejects_bad_covariance():
    with pytest.raises(DataError, match="positive definite"):
        gaussian_log_likelihood(np.zeros((2, 2)), np.zeros(2), np.diag([1.0, -1.0]))
    with pytest.raises(DataError, match="shapes"):
        gaussian_log_likelihood(np.zeros((2, 3)), np.zeros(2), np.eye(2))


def test_ppca_matches_closed_form_likelihood(linear_data):
    x, _, _, q = linear_data
    fit = ppca_mle(x, q)
    n, dim = x.shape
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True)))[::-1]
    sigma2 = eigenvalues[q:].mean()
    # Tipping & Bishop (1999), eq. (4) at the maximum.
    closed_form = (
        -0.5
        * n
        * (
            dim * np.log(2 * np.pi)
            + np.log(eigenvalues[:q]).sum()
            + (dim - q) * np.log(sigma2)
            + dim
        )
    )
    assert fit.noise_var == pytest.approx(sigma2, rel=1e-10)
    assert fit.log_likelihood == pytest.approx(closed_form, rel=1e-10)
    np.testing.assert_allclose(fit.mean, x.mean(axis=0))
    np.testing.assert_allclose(
        np.cov(x, rowvar=False, bias=True) @ fit.loadings,
        fit.loadings * eigenvalues[:q],
        atol=1e-8,
    )
    assert fit.noise_var == pytest.approx(1.0, abs=0.1)  # the simulated noise variance


@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5])
def test_ppca_beats_true_and_perturbed_parameters(linear_data, beta):
    x, w, b, q = linear_data
    fit = ppca_mle(x, q, beta=beta)
    sigma2 = np.mean(np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True)))[:-q]) / beta
    assert fit.noise_var == pytest.approx(sigma2, rel=1e-10)
    ll_true = linear_gaussian_log_likelihood(x, w, b, fit.noise_var)
    assert fit.log_likelihood >= ll_true
    rng = np.random.default_rng(1)
    for _ in range(3):
        w_pert = fit.loadings + 0.05 * rng.normal(size=fit.loadings.shape)
        b_pert = fit.mean + 0.05 * rng.normal(size=fit.mean.shape)
        assert fit.log_likelihood > linear_gaussian_log_likelihood(x, w_pert, b_pert, fit.noise_var)
    rotation = np.linalg.qr(rng.normal(size=(q, q)))[0]
    assert linear_gaussian_log_likelihood(
        x, fit.loadings @ rotation, fit.mean, fit.noise_var
    ) == pytest.approx(fit.log_likelihood, rel=1e-10)


def test_ppca_clips_directions_below_the_noise_floor(linear_data):
    x, _, _, q = linear_data
    fit = ppca_mle(x, q, beta=0.05)
    norms = np.linalg.norm(fit.loadings, axis=0)
    assert np.all(np.isfinite(fit.loadings)) and np.isfinite(fit.log_likelihood)
    assert np.any(norms == 0)
    with pytest.raises(ConfigError):
        ppca_mle(x, x.shape[1])


def test_posterior_matches_brute_force_conditioning():
    rng = np.random.default_rng(2)
    dim, q, noise_var = 6, 3, 0.4
    w, b = rng.normal(size=(dim, q)), rng.normal(size=dim)
    x = rng.normal(size=(5, dim))
    # Joint of (z, x): N([0; b], [[I, Wᵀ], [W, WWᵀ + σ²I]]); condition on x.
    cov_xx = w @ w.T + noise_var * np.eye(dim)
    gain = w.T @ np.linalg.inv(cov_xx)
    means, cov = linear_gaussian_posterior(w, b, noise_var, x)
    np.testing.assert_allclose(means, (x - b) @ gain.T, atol=1e-12)
    np.testing.assert_allclose(cov, np.eye(q) - gain @ w, atol=1e-12)
    # A subset of modalities = the matching rows of W and b.
    rows = [0, 2, 3]
    sub_gain = w[rows].T @ np.linalg.inv(cov_xx[np.ix_(rows, rows)])
    sub_means, sub_cov = linear_gaussian_posterior(w[rows], b[rows], noise_var, x[:, rows])
    np.testing.assert_allclose(sub_means, (x[:, rows] - b[rows]) @ sub_gain.T, atol=1e-12)
    np.testing.assert_allclose(sub_cov, np.eye(q) - sub_gain @ w[rows], atol=1e-12)


# ----------------------------------------------------------------------------- RDC and MCC


def test_rdc_detects_nonlinear_dependence():
    rng = np.random.default_rng(3)
    x = rng.normal(size=2000)
    assert rdc(x, x**2, rng=np.random.default_rng(0)) > 0.9
    assert rdc(x, np.cos(2 * x), rng=np.random.default_rng(0)) > 0.8
    independent = rdc(x, rng.normal(size=2000), rng=np.random.default_rng(0))
    assert 0 <= independent < 0.2


def test_rdc_depends_only_on_ranks_and_seed():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=500), rng.normal(size=500)
    y = y + x
    first = rdc(x, y, rng=np.random.RandomState(9))
    assert rdc(np.exp(x), 3 * y - 1, rng=np.random.RandomState(9)) == first
    assert rdc(x, y, rng=np.random.RandomState(10)) != first
    assert 0 <= first <= 1 + 1e-12


def test_mean_corr_coef_is_the_best_pairing():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 4))
    y = x @ rng.normal(size=(4, 4)) + rng.normal(size=(300, 4))
    corr = np.abs(np.corrcoef(x, y, rowvar=False)[:4, 4:])
    best = max(np.mean(corr[range(4), list(p)]) for p in itertools.permutations(range(4)))
    assert mean_corr_coef(x, y) == pytest.approx(best, rel=1e-12)
    assert mean_corr_coef(x, -2 * x[:, [2, 0, 3, 1]]) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="method"):
        mean_corr_coef(x, y, method="kendall")


def test_mean_corr_coef_tolerates_constant_columns():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(100, 2))
    y = np.column_stack([x[:, 1], np.ones(100)])
    assert mean_corr_coef(x, y) == pytest.approx(0.5)


def _signed_permutation_and_scaling(sources):
    return sources[:, [2, 0, 1]] * np.array([-3.0, 0.5, -0.2]) + np.array([1.0, -4.0, 2.0])


def test_compute_mcc_is_one_for_signed_permuted_scaled_sources():
    rng = np.random.default_rng(7)
    sources = rng.normal(size=(2000, 3)) * [1.0, 2.0, 0.5]
    result = compute_mcc(sources, _signed_permutation_and_scaling(sources))
    assert result.strong_out == pytest.approx(1.0)
    assert result.strong_in > 0.95
    assert result.weak_in > 0.95 and result.weak_out > 0.95
    assert list(result.as_dict()) == ["weak_in", "weak_out", "strong_in", "strong_out"]


def test_compute_mcc_is_small_for_independent_latents():
    rng = np.random.default_rng(8)
    result = compute_mcc(rng.normal(size=(2000, 3)), rng.normal(size=(2000, 3)))
    assert result.strong_out < 0.2
    assert result.strong_in < 0.2


def test_compute_mcc_is_deterministic_and_leaves_the_global_rng_alone():
    rng = np.random.default_rng(9)
    sources = rng.normal(size=(400, 3))
    latents = np.tanh(sources) + 0.3 * rng.normal(size=(400, 3))
    state = np.random.get_state()[1].copy()
    first = compute_mcc(sources, latents, cca_dim=2, seed=1)
    assert compute_mcc(sources, latents, cca_dim=2, seed=1) == first
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    assert compute_mcc(sources, latents, cca_dim=2, seed=2).strong_out == first.strong_out
    with pytest.raises(ConfigError, match="cca_dim"):
        compute_mcc(sources, latents, cca_dim=4)
    with pytest.raises(DataError):
        compute_mcc(sources, latents[:-1])
