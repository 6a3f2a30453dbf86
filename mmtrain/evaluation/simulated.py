"""Metrics that need the data's generating process: exact log-likelihoods of linear Gaussian
models (docs/math.md §4.1) and MCC against true sources (docs/math.md §4.5), reusing `mmtrain.metrics`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from mmtrain import metrics
from mmtrain.batch import Batch
from mmtrain.evaluation.subsets import Subset
from mmtrain.likelihoods import NormalLikelihood
from mmtrain.model import MultiModalVAE
from mmtrain.objectives import (
    ObjectiveModule,
    combined_stderr,
    importance_sampling,
    objective_key,
)
from mmtrain.priors import FixedPrior

if TYPE_CHECKING:
    from mmtrain.config import TrainConfig

#: the label column that holds the true sources of the iVAE simulations
SOURCES = "sources"


def is_linear_gaussian(model: MultiModalVAE) -> bool:
    """A fixed N(0, I) prior and, for every modality, a linear decoder with a fixed-scale
    normal likelihood on a flat vector: the model has an exact marginal likelihood."""
    if not isinstance(model.prior, FixedPrior) or model.prior.family != "normal":
        return False
    for name in model.modality_names:
        modality = model.modalities[name]
        likelihood = modality.likelihood
        if not isinstance(modality.decoder, nn.Linear) or len(modality.event_shape) != 1:
            return False
        if not isinstance(likelihood, NormalLikelihood) or likelihood.scale_mode != "fixed":
            return False
    return True


def linear_parameters(model: MultiModalVAE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stacked decoder weights `W [D, q]`, offsets `b [D]` and noise variances `[D]`."""
    weights, offsets, variances = [], [], []
    for name in model.modality_names:
        modality = model.modalities[name]
        weights.append(modality.decoder.weight.detach().double().numpy())
        offsets.append(modality.decoder.bias.detach().double().numpy())
        likelihood = modality.likelihood
        scale = likelihood.min_scale + torch.exp(likelihood.log_scale.detach().double())
        variances.append((scale**2).numpy())
    return np.concatenate(weights), np.concatenate(offsets), np.concatenate(variances)


def _columns(model: MultiModalVAE, subset: Subset) -> np.ndarray:
    sizes = [model.modalities[name].event_shape[0] for name in model.modality_names]
    starts = np.cumsum([0, *sizes])
    return np.concatenate([np.arange(starts[i], starts[i + 1]) for i in subset.members])


def exact_subset_log_likelihood(model: MultiModalVAE, data: Batch, subset: Subset) -> Tensor:
    """Exact log p(x_S) `[N]` of a linear Gaussian model with its own noise variances:
    x_S ~ N(b_S, W_S W_Sᵀ + diag σ_S²). Rows not observing S get NaN."""
    weights, offsets, variances = linear_parameters(model)
    columns = _columns(model, subset)
    out = torch.full((data.size,), float("nan"), dtype=torch.float64)
    rows = torch.nonzero(subset.observed(data.avail)).flatten()
    if rows.numel() == 0:
        return out
    x = np.concatenate(
        [data.x[model.modality_names[i]][rows].double().numpy() for i in subset.members], 1
    )
    w = weights[columns]
    cov = w @ w.T + np.diag(variances[columns])
    out[rows] = torch.as_tensor(metrics.gaussian_log_likelihood(x, offsets[columns], cov))
    return out


def exact_linear_metrics(model: MultiModalVAE, data: Batch) -> dict[str, float]:
    """Per-example exact log-likelihoods on the rows with every modality observed.

    `exact_ll` is the model's own: its decoders' variances (what importance sampling
    estimates). `exact_ll_reference_quirk` is the reference scripts' number: the same W and b
    with the PPCA noise variance σ̃² instead (not the model's likelihood). `mle_ll` is the
    PPCA maximum-likelihood fit of the same rows."""
    full = data.avail.bool().all(1)
    rows = int(full.sum())
    weights, offsets, _ = linear_parameters(model)
    out: dict[str, float] = {"exact_rows": float(rows)}
    if rows < 2:
        return out
    x = np.concatenate([data.x[name][full].double().numpy() for name in model.modality_names], 1)
    if weights.shape[1] >= x.shape[1]:
        return out
    fit = metrics.ppca_mle(x, weights.shape[1])
    every = Subset(tuple(range(model.num_modalities)), tuple(model.modality_names))
    own = exact_subset_log_likelihood(model, data.take(torch.nonzero(full).flatten()), every)
    out["exact_ll"] = float(own.mean())
    out["exact_ll_reference_quirk"] = (
        metrics.linear_gaussian_log_likelihood(x, weights, offsets, fit.noise_var) / rows
    )
    out["mle_ll"] = fit.log_likelihood / rows
    out["noise_var_mle"] = float(fit.noise_var)
    out["rel_model_gap"] = (out["mle_ll"] - out["exact_ll"]) / abs(out["mle_ll"])
    return out


@torch.no_grad()
def posterior_samples(
    model: MultiModalVAE, data: Batch, mask: Tensor | None, batch_size: int = 512
) -> Tensor:
    """One draw z ~ q(z | x_{mask ∩ observed}) per row `[N, d]`."""
    pieces = []
    for part, piece in data.chunks(batch_size):
        sub = None if mask is None else mask[part]
        pieces.append(model.encode(piece, sub).rsample(1)[0])
    return torch.cat(pieces)


def mcc_metrics(
    model: MultiModalVAE, data: Batch, subsets: Sequence[Subset], seed: int = 0
) -> dict[str, dict[str, float]]:
    """MCC (all four variants, `cca_dim = 1`, rows in a seeded random order) between the true
    sources and one posterior sample: `observed` uses each row's observed modalities (the scripts' headline number);
    each subset uses q(z | x_S) on the rows that observe all of S."""
    sources = data.extras.get(SOURCES)
    if sources is None or sources.dim() != 2:
        return {}
    out: dict[str, dict[str, float]] = {}
    z = posterior_samples(model, data, None)
    out["observed"] = {
        **metrics.compute_mcc_permuted(sources.numpy(), z.double().numpy(), 1, seed).as_dict(),
        "rows": float(data.size),
    }
    for subset in subsets:
        rows = torch.nonzero(subset.observed(data.avail)).flatten()
        if rows.numel() < 4:
            continue
        part = data.take(rows)
        mask = subset.mask(part.size, model.num_modalities)
        z = posterior_samples(model, part, mask)
        result = metrics.compute_mcc_permuted(sources[rows].numpy(), z.double().numpy(), 1, seed)
        out[subset.name] = {**result.as_dict(), "rows": float(rows.numel())}
    return out


@torch.no_grad()
def objective_estimate(
    model: MultiModalVAE, data: Batch, config: TrainConfig, batch_size: int
) -> dict[str, float]:
    """Per-example training objective (`masked_objective` or `mixture_objective`) with a
    random S and L = 1, and the ELBO of q(z|x) (β = 1), over all rows of `data`.
    Reconstruction weights are 1, as in every evaluation."""
    objective = ObjectiveModule.from_config(model, config.model)
    value, elbo, elbo_rows = 0.0, 0.0, 0
    for _, part in data.chunks(batch_size):
        out = objective.evaluate(part)
        value += float(out.per_example.double().sum())
        if out.elbo is not None:
            elbo += float(out.elbo.double().sum())
            elbo_rows += part.size
    result = {objective_key(config.model.objective): value / data.size}
    if elbo_rows == data.size:
        result["elbo"] = elbo / data.size
    return result


@torch.no_grad()
def is_log_likelihood(
    model: MultiModalVAE, data: Batch, num_samples: int, batch_size: int
) -> tuple[float, float]:
    """Per-example importance-sampled log-likelihood of the observed modalities over all
    rows and its Monte-Carlo standard error (`objectives.ImportanceEstimate`)."""
    estimates, errors = [], []
    for _, part in data.chunks(batch_size):
        estimate = importance_sampling(model, part, num_samples)
        estimates.append(estimate.log_likelihood)
        errors.append(estimate.stderr)
    values = torch.cat(estimates).double()
    return float(values.mean()), combined_stderr(torch.cat(errors))


def pair_mcc(model: MultiModalVAE, data: Batch, seed: int) -> dict[str, dict[str, float]]:
    """MCC of q(z | x_{a,b}) for every pair of modalities on all rows (rows observing
    neither get q(z|∅); how many is reported), as the multimodal script does."""
    sources = data.extras[SOURCES].double().numpy()
    names = model.modality_names
    out: dict[str, dict[str, float]] = {}
    for a, b in itertools.combinations(range(len(names)), 2):
        mask = torch.zeros_like(data.avail, dtype=torch.bool)
        mask[:, [a, b]] = True
        empty = int((~(mask & data.avail.bool()).any(1)).sum())
        z = posterior_samples(model, data, mask).double().numpy()
        result = metrics.compute_mcc_permuted(sources, z, 1, seed).as_dict()
        out[f"{names[a]}+{names[b]}"] = {**result, "rows_with_no_observed_modality": empty}
    return out


def experiment_metrics(
    model: MultiModalVAE, config: TrainConfig, splits: dict[str, Batch]
) -> dict[str, Any]:
    """The numbers the paper's scripts report, on the experiment's data (`splits`: the
    training split, and the test split when the dataset has one): the objective and the
    ELBO on the training rows, their gaps to the exact log-likelihood of a linear Gaussian
    model with the PPCA fit beside it, importance-sampled log-likelihoods with standard
    errors, and MCC against the true sources (on the test split when there is one, and for
    every pair of modalities when there are more than two)."""
    model.eval()
    torch.manual_seed(config.seed + 1)
    train = splits["train"]
    batch_size = config.data.batch_size
    is_samples = config.train.eval_is_samples
    results: dict[str, Any] = {}
    if is_linear_gaussian(model):
        exact = exact_linear_metrics(model, train)
        exact.pop("rel_model_gap", None)
        results |= exact
    estimates = objective_estimate(model, train, config, batch_size)
    results |= estimates
    if "exact_ll" in results:
        exact_ll, mle = float(results["exact_ll"]), float(results["mle_ll"])
        results["rel_model_gap"] = (mle - exact_ll) / abs(mle)
        objective = estimates[objective_key(config.model.objective)]
        results["rel_objective_gap"] = (exact_ll - objective) / abs(exact_ll)
        if "elbo" in estimates:
            results["rel_elbo_gap"] = (exact_ll - estimates["elbo"]) / abs(exact_ll)
    results["is_ll"], results["is_ll_se"] = is_log_likelihood(model, train, is_samples, batch_size)
    test = splits.get("test")
    if test is not None:
        results["is_ll_test"], results["is_ll_test_se"] = is_log_likelihood(
            model, test, is_samples, batch_size
        )
    scored = train if test is None else test
    if SOURCES in scored.extras:
        observed = mcc_metrics(model, scored, [], config.seed)["observed"]
        results["mcc"] = {key: value for key, value in observed.items() if key != "rows"}
        if model.num_modalities > 2:
            results["mcc_pairs"] = pair_mcc(model, scored, config.seed)
    return results
