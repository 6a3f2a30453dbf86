"""Importance-sampled joint and conditional log-likelihoods against exact values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from mmtrain import metrics
from mmtrain.batch import Batch
from mmtrain.evaluation.likelihood import log_likelihood_table, subset_log_likelihood
from mmtrain.evaluation.simulated import (
    exact_linear_metrics,
    exact_subset_log_likelihood,
    is_linear_gaussian,
)
from mmtrain.evaluation.subsets import enumerate_subsets, make_subset, parse_subset
from mmtrain.objectives import (
    combined_stderr,
    importance_log_likelihood,
    importance_sampling,
    log_mean_exp_stderr,
)
from tests.evaluation.models import linear_gaussian_model
from tests.helpers import build_small_model, random_batch


def scipy_log_likelihood(lg, batch: Batch, members: tuple[int, ...]) -> np.ndarray:
    """log N(x_S; b_S, W_S W_Sᵀ + σ² I), computed here from the generating parameters."""
    w = np.concatenate([lg.weights[i].double().numpy() for i in members])
    b = np.concatenate([lg.offsets[i].double().numpy() for i in members])
    x = np.concatenate([batch.x[f"x{i + 1}"].double().numpy() for i in members], 1)
    cov = w @ w.T + lg.noise_std**2 * np.eye(len(b))
    return multivariate_normal(b, cov).logpdf(x)


def test_subsets_cover_small_sets_and_stay_linear_for_large_ones() -> None:
    names = ["a", "b", "c"]
    subsets = enumerate_subsets(names)
    assert [s.name for s in subsets] == ["a", "b", "c", "a+b", "a+c", "b+c", "a+b+c"]
    many = enumerate_subsets([f"m{i}" for i in range(6)], max_modalities=4)
    assert len(many) == 13 and many[-1].size == 6
    assert parse_subset("c+a", names) == make_subset([0, 2], names)
    assert parse_subset("∅", names).name == "∅"


def test_is_log_likelihood_approaches_the_exact_value_as_samples_grow() -> None:
    """Joint and conditional estimates of a linear Gaussian model converge to the closed
    form (scipy on the generating parameters); L = 1 is biased low (Jensen)."""
    torch.manual_seed(0)
    lg = linear_gaussian_model()
    batch, _ = lg.sample(200, seed=1)
    subsets = enumerate_subsets(lg.model.modality_names)
    exact = {s.name: scipy_log_likelihood(lg, batch, s.members) for s in subsets}
    errors = {}
    for samples in (1, 16, 1024):
        table = log_likelihood_table(lg.model, batch, subsets, samples, batch_size=64)
        errors[samples] = {
            name: float(np.mean(table.per_row[name].numpy() - exact[name])) for name in exact
        }
        conditional = table.conditional()
        expected = float(np.mean(exact["x1+x2"] - exact["x1"]))
        errors[samples]["x2|x1"] = conditional["x1"]["x2"]["mean"] - expected
    for name in errors[1]:
        assert abs(errors[1024][name]) < abs(errors[1][name]), (name, errors)
        assert abs(errors[1024][name]) < 0.02, (name, errors)
    assert errors[1]["x1+x2"] < -0.05
    joint = log_likelihood_table(lg.model, batch, subsets, 1024).joint()["x1+x2"]
    assert joint["rows"] == 200
    assert joint["mean"] == pytest.approx(float(np.mean(exact["x1+x2"])), abs=0.02)


def test_exact_linear_metrics_match_independent_formulas() -> None:
    lg = linear_gaussian_model(sizes=(4, 5), latent=2)
    batch, _ = lg.sample(300, seed=2)
    assert is_linear_gaussian(lg.model)
    every = make_subset([0, 1], lg.model.modality_names)
    ours = exact_subset_log_likelihood(lg.model, batch, every).numpy()
    np.testing.assert_allclose(ours, scipy_log_likelihood(lg, batch, (0, 1)), rtol=1e-7)
    result = exact_linear_metrics(lg.model, batch)
    x = np.concatenate([batch.x["x1"].double().numpy(), batch.x["x2"].double().numpy()], 1)
    fit = metrics.ppca_mle(x, 2)
    w = np.concatenate([w.double().numpy() for w in lg.weights])
    b = np.concatenate([b.double().numpy() for b in lg.offsets])
    assert result["exact_ll_reference_quirk"] == pytest.approx(
        metrics.linear_gaussian_log_likelihood(x, w, b, fit.noise_var) / 300
    )
    assert result["exact_ll"] == pytest.approx(float(ours.mean()))
    assert result["mle_ll"] >= result["exact_ll"] - 1e-9  # PPCA maximises over W, b and σ²
    assert result["mle_ll"] >= result["exact_ll_reference_quirk"] - 1e-9


def test_subset_estimate_equals_the_objectives_estimator_on_the_same_draws() -> None:
    """With the same random state, log p̂(x_S) equals `importance_log_likelihood` on a batch
    whose availability is S: only the decoders of S differ, and they do not draw."""
    model = build_small_model("sum_pooling").eval()
    batch = random_batch(model, 16, avail_prob=1.0)
    subset = make_subset([0, 2], model.modality_names)
    torch.manual_seed(3)
    ours = subset_log_likelihood(model, batch, subset, 40, chunk_size=16)
    restricted = Batch(batch.x, subset.mask(16, model.num_modalities))
    torch.manual_seed(3)
    with torch.no_grad():
        theirs = importance_log_likelihood(model, restricted, 40, chunk_size=16)
    torch.testing.assert_close(ours, theirs)


def test_table_respects_availability_and_reports_counts() -> None:
    model = build_small_model("moe").eval()
    batch = random_batch(model, 40, seed=4, avail_prob=0.6)
    subsets = enumerate_subsets(model.modality_names)
    table = log_likelihood_table(model, batch, subsets, 8, batch_size=7, chunk_size=3)
    joint = table.joint()
    for subset in subsets:
        observed = int(subset.observed(batch.avail).sum())
        assert joint[subset.name]["rows"] == observed
        values = table.per_row[subset.name]
        assert bool(values.isnan().eq(~subset.observed(batch.avail)).all())
        assert observed == 0 or math.isfinite(joint[subset.name]["mean"])
    conditional = table.conditional()
    assert set(conditional["∅"]) == set(model.modality_names)
    both = make_subset([0, 1], model.modality_names).observed(batch.avail)
    assert conditional["m0"]["m1"]["rows"] == int(both.sum())


def test_rows_with_nothing_observed_get_exactly_zero() -> None:
    """log p̂ of no data is 0 exactly, with standard error 0, whatever q(z|∅) draws."""
    for aggregator in ("sum_pooling", "moe", "poe"):
        model = build_small_model(aggregator).eval()
        batch = random_batch(model, 6, seed=7)
        batch.avail[1:3] = False
        torch.manual_seed(0)
        estimate = importance_sampling(model, batch, 16, chunk_size=5)
        assert torch.equal(estimate.log_likelihood[1:3], torch.zeros(2))
        assert torch.equal(estimate.stderr[1:3], torch.zeros(2))
        rest = torch.tensor([0, 3, 4, 5])
        assert (estimate.log_likelihood[rest] != 0).all()
        assert (estimate.stderr[rest] > 0).all()
        # restricted to modalities a row does not observe: also exactly 0
        only = importance_log_likelihood(model, batch, 8, modalities=["m1"])
        unobserved = ~batch.avail[:, 1]
        assert unobserved.any() and torch.equal(
            only[unobserved], torch.zeros_like(only[unobserved])
        )


def test_stderr_is_the_delta_method_one() -> None:
    """se = sd(w) / (sqrt(L) · mean(w)) computed directly on the weights, against the
    log-space formula; and the combination over examples."""
    gen = torch.Generator().manual_seed(0)
    log_w = torch.randn(50, 3, generator=gen, dtype=torch.float64) * torch.tensor([0.1, 1, 3])
    estimate, stderr = log_mean_exp_stderr(log_w - 700)  # far below exp's range: log space
    w = log_w.exp()
    direct = w.std(0) / (math.sqrt(50) * w.mean(0))
    torch.testing.assert_close(stderr, direct)
    torch.testing.assert_close(estimate, w.mean(0).log() - 700)
    assert combined_stderr(stderr) == pytest.approx(float(direct.pow(2).sum().sqrt() / 3))
    single = log_mean_exp_stderr(log_w[:1])[1]
    assert single.isnan().all()


def test_stderr_matches_the_spread_over_reruns() -> None:
    """The reported Monte-Carlo standard error predicts the spread of the estimate over
    independent reruns (linear Gaussian model, L = 64)."""
    lg = linear_gaussian_model()
    batch, _ = lg.sample(8, seed=3)
    torch.manual_seed(4)
    runs = [importance_sampling(lg.model, batch, 64) for _ in range(300)]
    spread = torch.stack([r.log_likelihood for r in runs]).double().std(0)
    predicted = torch.stack([r.stderr for r in runs]).double().mean(0)
    ratio = predicted / spread
    assert ((ratio > 0.8) & (ratio < 1.25)).all(), ratio


def test_table_reports_monte_carlo_stderr() -> None:
    model = build_small_model("sum_pooling").eval()
    batch = random_batch(model, 30, seed=8, avail_prob=0.8)
    subsets = enumerate_subsets(model.modality_names)
    torch.manual_seed(5)
    table = log_likelihood_table(model, batch, subsets, 12, batch_size=7, chunk_size=5)
    for name, summary in table.joint().items():
        rows = ~table.per_row[name].isnan()
        errors = table.per_row_mc_stderr[name][rows]
        assert summary["mc_stderr"] == pytest.approx(combined_stderr(errors))
        assert summary["mc_stderr"] > 0
    row = table.conditional()["m0"]["m1"]
    both = make_subset([0, 1], model.modality_names)
    observed = both.observed(batch.avail)
    joint_se = table.per_row_mc_stderr[both.name][observed]
    base_se = table.per_row_mc_stderr["m0"][observed]
    assert row["mc_stderr"] == pytest.approx(combined_stderr(torch.hypot(joint_se, base_se)))
