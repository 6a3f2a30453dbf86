"""The masked and mixture objectives (paper §3, docs/math.md) and the importance-sampled
log-likelihood with its Monte-Carlo standard error.

Every per-sample term is `[L, B]`:
  R_marg  Σ_s w_s m_s log p(x_s | z_S)    R_cross Σ_s w_s c_s log p(x_s | z_S)
  R_comp  Σ_s w_s c_s log p(x_s | z_F)    R_full  Σ_s w_s a_s log p(x_s | z_F)
  Q_S = log q̄(z_S | x_S)   Q_F = log q̄(z_F | x)   (q̄: STL copy, parameters detached)
  Q_SF = log q(z_F | x_S)  (live)           P_S = log p(z_S)     P_F = log p(z_F)
masked:  J = R_marg − βQ_S + βP_S + R_comp − βQ_F + βQ_SF
mixture: J = R_marg + R_cross − βQ_S + βP_S
loss = Σ_b −logsumexp_l J   (a sum over the batch, no −log L during training)

The value reported per example is logsumexp_l J − log L (the average for L = 1), logged as
`masked_objective` or `mixture_objective`. Only the mixture objective is a lower bound of
log p(x): the masked objective's conditional term uses q(z|x_S) in place of p(z|x_S) and can
exceed log p(x). The true lower bound reported beside it is the ELBO of the full encoder,
`elbo = Σ_s a_s log p(x_s | z_F) + log p(z_F) − log q(z_F | x)` with β = 1 and reconstruction
weights 1, averaged over the L samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mmtrain.batch import Batch
from mmtrain.distributions import Distribution
from mmtrain.masks import sample_subset_mask
from mmtrain.model import MultiModalVAE
from mmtrain.registry import OBJECTIVES

Reconstruct = Callable[[Tensor], Tensor]
TERM_NAMES = ("R_marg", "R_cross", "R_comp", "R_full", "Q_S", "Q_F", "Q_SF", "P_S", "P_F")


def objective_key(objective: str) -> str:
    """The name under which an objective's value is reported: `masked_objective`,
    `mixture_objective` (JSON keys, `train/...` and `eval/...` logs, tables)."""
    return f"{objective}_objective"


@dataclass
class ObjectiveOutput:
    """The loss to minimise, the per-example objective value, the ELBO when computed, and
    every term for logging."""

    loss: Tensor
    per_example: Tensor
    terms: dict[str, Tensor]
    subset_mask: Tensor
    #: the objective's name; its value is reported as `<name>_objective`
    objective: str
    elbo: Tensor | None = None

    def logged_tensors(self) -> dict[str, Tensor]:
        """Per-example means of the loss, the objective value (`<name>_objective`), the ELBO
        (when computed) and the terms (each averaged over samples) as detached 0-d tensors
        on the model's device: no host synchronisation, so a training loop can sum them over
        its log window and read them once."""
        size = self.per_example.shape[0]
        out = {
            "loss": self.loss.detach() / size,
            objective_key(self.objective): self.per_example.detach().mean(),
        }
        if self.elbo is not None:
            out["elbo"] = self.elbo.detach().mean()
        out.update({name: value.detach().mean() for name, value in self.terms.items()})
        return out

    def logged(self) -> dict[str, float]:
        """`logged_tensors` as Python floats."""
        return {name: float(value) for name, value in self.logged_tensors().items()}


def _masked_sum(log_probs: Tensor, mask: Tensor, weights: Tensor) -> Tensor:
    return torch.where(mask, log_probs * weights, 0.0).sum(-1)


def bound_terms(
    objective: str,
    z_subset: Tensor,
    z_full: Tensor | None,
    q_full: Distribution | None,
    q_subset: Distribution,
    prior_log_prob: Callable[[Tensor], Tensor],
    reconstruct: Reconstruct,
    avail: Tensor,
    subset_mask: Tensor,
    weights: Tensor,
    beta: float = 1.0,
    stl: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-sample objective `J [L, B]` and its terms for given samples z_S (and z_F).

    The masked objective also returns, without gradient, P_F = log p(z_F) (not part of J)
    and `elbo`, the per-sample ELBO of q(z|x) with β = 1 and reconstruction weights 1."""
    avail, subset_mask = avail.bool(), subset_mask.bool()
    complement = avail & ~subset_mask
    q_subset_score = q_subset.detached() if stl else q_subset
    terms: dict[str, Tensor] = {}
    if objective == "mixture":
        log_p_subset = reconstruct(z_subset)
        terms["R_marg"] = _masked_sum(log_p_subset, subset_mask, weights)
        terms["R_cross"] = _masked_sum(log_p_subset, complement, weights)
        terms["Q_S"] = q_subset_score.log_prob(z_subset)
        terms["P_S"] = prior_log_prob(z_subset)
        value = terms["R_marg"] + terms["R_cross"] + beta * (terms["P_S"] - terms["Q_S"])
        return value, terms
    if objective != "masked":
        raise ValueError(f"unknown objective {objective!r}")
    assert z_full is not None and q_full is not None
    # One decoder pass over both latents: [2L, B, d] → [2L, B, M].
    log_p = reconstruct(torch.cat([z_subset, z_full]))
    log_p_subset, log_p_full = log_p.split([z_subset.shape[0], z_full.shape[0]])
    q_full_score = q_full.detached() if stl else q_full
    terms["R_marg"] = _masked_sum(log_p_subset, subset_mask, weights)
    terms["R_cross"] = _masked_sum(log_p_subset, complement, weights)
    terms["R_comp"] = _masked_sum(log_p_full, complement, weights)
    terms["R_full"] = _masked_sum(log_p_full, avail, weights)
    terms["Q_S"] = q_subset_score.log_prob(z_subset)
    terms["Q_F"] = q_full_score.log_prob(z_full)
    terms["Q_SF"] = q_subset.log_prob(z_full)
    terms["P_S"] = prior_log_prob(z_subset)
    with torch.no_grad():
        terms["P_F"] = prior_log_prob(z_full)
        unit = torch.ones_like(weights)
        terms["elbo"] = _masked_sum(log_p_full, avail, unit) + terms["P_F"] - terms["Q_F"]
    marginal = terms["R_marg"] + beta * (terms["P_S"] - terms["Q_S"])
    conditional = terms["R_comp"] + beta * (terms["Q_SF"] - terms["Q_F"])
    return marginal + conditional, terms


def variational_objective(
    objective: str,
    model: MultiModalVAE,
    batch: Batch,
    samples: int = 1,
    beta: float = 1.0,
    stl: bool = True,
    subset_mask: Tensor | None = None,
    subset_mode: str = "faithful",
    reconstruction_weights: bool = True,
    elbo: bool = False,
) -> ObjectiveOutput:
    """Sample S, run the aggregator with both masks, and evaluate the chosen objective.

    `reconstruction_weights=False` uses weight 1 for every modality (evaluation). The ELBO
    of q(z|x) comes free with the masked objective; the mixture objective computes it (with
    its own draw z_F ~ q(z|x), without gradient) only when `elbo=True`.
    """
    x = model.clean(batch)
    avail = batch.avail.bool()
    if subset_mask is None:
        subset_mask = sample_subset_mask(avail, None, subset_mode)
    subset_mask = subset_mask.bool() & avail
    h = model.encode_features(x)
    weights = (
        model.reconstruction_weights
        if reconstruction_weights
        else torch.ones_like(model.reconstruction_weights)
    )

    def reconstruct(z: Tensor) -> Tensor:
        return model.reconstruction_log_probs(z, x)

    if objective == "masked":
        q_full, q_subset = model.posterior_pair(h, avail, subset_mask)
        z_full = q_full.rsample(samples)
    else:
        q_full, q_subset, z_full = None, model.posterior(h, subset_mask), None
    z_subset = q_subset.rsample(samples)
    value, terms = bound_terms(
        objective,
        z_subset,
        z_full,
        q_full,
        q_subset,
        model.prior.log_prob,
        reconstruct,
        avail,
        subset_mask,
        weights,
        beta,
        stl,
    )
    elbo_samples = terms.pop("elbo", None)
    if elbo_samples is None and elbo:
        with torch.no_grad():
            elbo_samples = full_elbo(model, x, h, avail, samples)
    best = torch.logsumexp(value, dim=0)
    return ObjectiveOutput(
        -best.sum(),
        best.detach() - math.log(samples),
        terms,
        subset_mask,
        objective,
        None if elbo_samples is None else elbo_samples.mean(0),
    )


def full_elbo(
    model: MultiModalVAE, x: dict[str, Tensor], h: Tensor, avail: Tensor, samples: int = 1
) -> Tensor:
    """Per-sample ELBO of the full encoder `[L, B]`: with z_F ~ q(z|x),
    Σ_s a_s log p(x_s | z_F) + log p(z_F) − log q(z_F | x), β = 1 and weights 1. Its mean
    is a lower bound of log p(x_obs) for any encoder."""
    q_full = model.posterior(h, avail)
    z_full = q_full.rsample(samples)
    log_p = torch.where(avail, model.reconstruction_log_probs(z_full, x), 0.0).sum(-1)
    return log_p + model.prior.log_prob(z_full) - q_full.log_prob(z_full)


@OBJECTIVES.register("masked")
def masked_objective(model: MultiModalVAE, batch: Batch, **options: object) -> ObjectiveOutput:
    """The proposed objective E_S[L_S(x_S) + L_\\S(x)] with q(z|x_S) as the conditional prior.

    Not a lower bound of log p(x): it can exceed it when q(z|x_S) differs from the average of
    q(z|x) over the data sharing x_S."""
    return variational_objective("masked", model, batch, **options)


@OBJECTIVES.register("mixture")
def mixture_objective(model: MultiModalVAE, batch: Batch, **options: object) -> ObjectiveOutput:
    """The mixture-based objective: reconstruct every observed modality from z ~ q(z|x_S).
    With β = 1 and reconstruction weights 1 it is a lower bound of log p(x) for every S."""
    return variational_objective("mixture", model, batch, **options)


@dataclass
class ImportanceEstimate:
    """Per-example importance-sampled log p̂(x) `[B]` and its Monte-Carlo standard error `[B]`.

    With weights w_l = p(x, z_l) / q(z_l | x), l = 1..L, log p̂ = log w̄. Its standard error is
    the delta-method one, se = sqrt(s² / (L w̄²)) with s² the sample variance of the w_l, i.e.
    sqrt(Σ_l (w_l / w̄ − 1)² / (L (L − 1))), computed in log space (NaN for L = 1). It
    measures the spread of the estimate over reruns; the estimate itself is biased low by
    about se² / 2. `combined_stderr` gives the standard error of a mean over examples.
    """

    log_likelihood: Tensor
    stderr: Tensor

    def combined_stderr(self) -> float:
        """Standard error of the mean of `log_likelihood` over the examples (independent
        estimates): sqrt(Σ_n se_n²) / N."""
        return combined_stderr(self.stderr)


def combined_stderr(stderr: Tensor) -> float:
    """sqrt(Σ_n se_n²) / N: the Monte-Carlo standard error of a mean of N independent
    per-example estimates with standard errors `stderr`."""
    if stderr.numel() == 0:
        return math.nan
    return float(stderr.double().pow(2).sum().sqrt() / stderr.numel())


def log_mean_exp_stderr(log_weights: Tensor) -> tuple[Tensor, Tensor]:
    """`(log w̄, se)` over the first axis of `log_weights [L, ...]`; see `ImportanceEstimate`."""
    num = log_weights.shape[0]
    log_total = torch.logsumexp(log_weights, dim=0)
    estimate = log_total - math.log(num)
    if num < 2:
        return estimate, torch.full_like(estimate, math.nan)
    ratios = torch.exp(log_weights - estimate)
    stderr = ((ratios - 1).pow(2).sum(0) / (num * (num - 1))).sqrt()
    return estimate, stderr


@torch.no_grad()
def importance_sampling(
    model: MultiModalVAE,
    batch: Batch,
    num_samples: int,
    mask: Tensor | None = None,
    chunk_size: int = 64,
    modalities: Sequence[str] | None = None,
) -> ImportanceEstimate:
    """log p̂(x_obs) per example with its Monte-Carlo standard error, samples drawn in chunks.

    z_l ~ q(z | x_obs) (or q(z | x_mask) with `mask`); weights log p(x_obs|z) + log p(z) −
    log q(z|·); log-mean-exp over l. Reconstruction weights are 1. `modalities` restricts the
    likelihood to those modalities (only their decoders run). A row with nothing observed has
    log p̂ = 0 exactly (the log-likelihood of no data) and standard error 0.
    """
    x = model.clean(batch)
    avail = batch.avail.bool()
    q = model.posterior(model.encode_features(x), avail if mask is None else mask & avail)
    names, observed = None, avail
    if modalities is not None:
        names = list(modalities)
        observed = avail[:, [model.modality_names.index(name) for name in names]]
    chunks = []
    remaining = num_samples
    while remaining > 0:
        n = min(chunk_size, remaining)
        z = q.rsample(n)
        log_p = model.reconstruction_log_probs(z, x, names)
        weights = torch.where(observed, log_p, 0.0).sum(-1)
        chunks.append(weights + model.prior.log_prob(z) - q.log_prob(z))
        remaining -= n
    estimate, stderr = log_mean_exp_stderr(torch.cat(chunks))
    anything = observed.any(-1)
    return ImportanceEstimate(
        torch.where(anything, estimate, 0.0), torch.where(anything, stderr, 0.0)
    )


def importance_log_likelihood(
    model: MultiModalVAE,
    batch: Batch,
    num_samples: int,
    mask: Tensor | None = None,
    chunk_size: int = 64,
    modalities: Sequence[str] | None = None,
) -> Tensor:
    """log p̂(x_obs) per example `[B]`: `importance_sampling(...).log_likelihood`."""
    return importance_sampling(
        model, batch, num_samples, mask, chunk_size, modalities
    ).log_likelihood
