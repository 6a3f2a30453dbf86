"""Metrics that need the data's generating process: exact log-likelihoods of linear Gaussian
models (SPEC §4.1) and MCC against true sources (SPEC §4.5), reusing `mmtrain.metrics`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mmtrain import metrics
from mmtrain.batch import Batch
from mmtrain.evaluation.subsets import Subset
from mmtrain.likelihoods import NormalLikelihood
from mmtrain.model import MultiModalVAE
from mmtrain.priors import FixedPrior

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
