"""The masked and mixture objectives (SPEC §2.2–2.5) and the importance-sampled
log-likelihood (SPEC §4.4).

Every per-sample term is `[L, B]`:
  R_marg  Σ_s w_s m_s log p(x_s | z_S)    R_cross Σ_s w_s c_s log p(x_s | z_S)
  R_comp  Σ_s w_s c_s log p(x_s | z_F)    R_full  Σ_s w_s a_s log p(x_s | z_F)
  Q_S = log q̄(z_S | x_S)   Q_F = log q̄(z_F | x)   (q̄: STL copy, parameters detached)
  Q_SF = log q(z_F | x_S)  (live)           P_S = log p(z_S)
masked:  J = R_marg − βQ_S + βP_S + R_comp − βQ_F + βQ_SF
mixture: J = R_marg + R_cross − βQ_S + βP_S
loss = Σ_b −logsumexp_l J   (a sum over the batch, no −log L during training)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mmtrain.distributions import Distribution
from mmtrain.masks import sample_subset_mask
from mmtrain.model import Batch, MultiModalVAE
from mmtrain.registry import OBJECTIVES

Reconstruct = Callable[[Tensor], Tensor]
TERM_NAMES = ("R_marg", "R_cross", "R_comp", "R_full", "Q_S", "Q_F", "Q_SF", "P_S")


@dataclass
class ObjectiveOutput:
    """The loss to minimise, the per-example objective and every term for logging."""

    loss: Tensor
    per_example: Tensor
    terms: dict[str, Tensor]
    subset_mask: Tensor

    def logged_tensors(self) -> dict[str, Tensor]:
        """Per-example means of the loss and the terms (each averaged over samples) as
        detached 0-d tensors on the model's device: no host synchronisation, so a training
        loop can sum them over its log window and read them once."""
        size = self.per_example.shape[0]
        out = {"loss": self.loss.detach() / size, "bound": self.per_example.detach().mean()}
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
    """Per-sample objective `J [L, B]` and its terms for given samples z_S (and z_F)."""
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
) -> ObjectiveOutput:
    """Sample S, run the aggregator with both masks, and evaluate the chosen bound."""
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
    per_example = torch.logsumexp(value, dim=0)
    return ObjectiveOutput(-per_example.sum(), per_example.detach(), terms, subset_mask)


@OBJECTIVES.register("masked")
def masked_objective(model: MultiModalVAE, batch: Batch, **options: object) -> ObjectiveOutput:
    """The proposed bound: E_S[L_S(x_S) + L_\\S(x)] with q(z|x_S) as the conditional prior."""
    return variational_objective("masked", model, batch, **options)


@OBJECTIVES.register("mixture")
def mixture_objective(model: MultiModalVAE, batch: Batch, **options: object) -> ObjectiveOutput:
    """The mixture-based bound: reconstruct every observed modality from z ~ q(z|x_S)."""
    return variational_objective("mixture", model, batch, **options)


@torch.no_grad()
def importance_log_likelihood(
    model: MultiModalVAE,
    batch: Batch,
    num_samples: int,
    mask: Tensor | None = None,
    chunk_size: int = 64,
    modalities: Sequence[str] | None = None,
) -> Tensor:
    """log p̂(x_obs) per example (SPEC §4.4), `[B]`, with samples drawn in chunks.

    z_l ~ q(z | x_obs) (or q(z | x_mask) with `mask`); weights log p(x_obs|z) + log p(z) −
    log q(z|·); log-sum-exp over l minus log L. Reconstruction weights are 1. `modalities`
    restricts the likelihood to those modalities (only their decoders run).
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
    return torch.logsumexp(torch.cat(chunks), dim=0) - math.log(num_samples)
