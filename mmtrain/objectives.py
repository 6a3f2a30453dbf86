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
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn

from mmtrain.batch import Batch
from mmtrain.distributions import Distribution
from mmtrain.masks import sample_subset_mask
from mmtrain.model import MultiModalVAE
from mmtrain.registry import OBJECTIVES

if TYPE_CHECKING:
    from mmtrain.config import ModelSection

Reconstruct = Callable[[Tensor], Tensor]


class Objective(Protocol):
    """A registered objective: `(model, batch, *, samples, beta, stl, subset_mask,
    subset_mode, reconstruction_weights, elbo) -> ObjectiveOutput`."""

    def __call__(
        self, model: MultiModalVAE, batch: Batch, **options: object
    ) -> ObjectiveOutput: ...


PriorLogProb = Callable[[Tensor], Tensor]


def objective_key(objective: str) -> str:
    """The name under which an objective's value is reported: `masked_objective`,
    `mixture_objective` (JSON keys, `train/...` and `eval/...` logs, tables)."""
    return f"{objective}_objective"


@dataclass
class ObjectiveTerms:
    """The per-sample terms `[L, B]` of the header. The masked objective fills all of them;
    the mixture objective only the four that use z_S. `P_F` and `elbo` carry no gradient."""

    R_marg: Tensor
    R_cross: Tensor
    Q_S: Tensor
    P_S: Tensor
    R_comp: Tensor | None = None
    R_full: Tensor | None = None
    Q_F: Tensor | None = None
    Q_SF: Tensor | None = None
    P_F: Tensor | None = None
    elbo: Tensor | None = None

    def named(self) -> dict[str, Tensor]:
        """The computed terms by name (the ELBO is reported on its own)."""
        return {
            spec.name: value
            for spec in fields(self)
            if spec.name != "elbo" and (value := getattr(self, spec.name)) is not None
        }


@dataclass
class Latents:
    """What both objectives share for one batch: cleaned inputs, the availability and
    subset masks, the reconstruction weights, q(z|x_S) with its samples z_S, and (for the
    masked objective) q(z|x) with its independent samples z_F."""

    x: dict[str, Tensor]
    avail: Tensor
    subset_mask: Tensor
    weights: Tensor
    q_subset: Distribution
    z_subset: Tensor
    q_full: Distribution | None = None
    z_full: Tensor | None = None

    @property
    def complement(self) -> Tensor:
        return self.avail & ~self.subset_mask


def draw_latents(
    model: MultiModalVAE,
    batch: Batch,
    samples: int = 1,
    subset_mask: Tensor | None = None,
    subset_mode: str = "faithful",
    reconstruction_weights: bool = True,
    full: bool = True,
) -> Latents:
    """Sample S (unless `subset_mask` is given), encode once, run the aggregator with the
    subset mask (and, with `full`, the availability mask in the same pass) and draw `samples`
    reparameterised latents from each posterior. `reconstruction_weights=False` uses weight
    1 for every modality (evaluation)."""
    x = model.clean(batch)
    avail = batch.avail.bool()
    if subset_mask is None:
        subset_mask = sample_subset_mask(avail, None, subset_mode)
    subset_mask = subset_mask.bool() & avail
    h = model.encode_features(x)
    weights = model.reconstruction_weights
    if not reconstruction_weights:
        weights = torch.ones_like(weights)
    q_full, z_full = None, None
    if full:
        q_full, q_subset = model.posterior_pair(h, avail, subset_mask)
        z_full = q_full.rsample(samples)
    else:
        q_subset = model.posterior(h, subset_mask)
    z_subset = q_subset.rsample(samples)
    return Latents(x, avail, subset_mask, weights, q_subset, z_subset, q_full, z_full)


def _masked_sum(log_probs: Tensor, mask: Tensor, weights: Tensor) -> Tensor:
    return torch.where(mask, log_probs * weights, 0.0).sum(-1)


def _subset_terms(
    latents: Latents, log_p_subset: Tensor, prior_log_prob: PriorLogProb, stl: bool
) -> dict[str, Tensor]:
    """The terms both objectives take from z_S ~ q(z|x_S): reconstruction of S and of the
    rest, log q(z_S|x_S) (parameters detached under STL) and log p(z_S)."""
    z_subset, weights, q_subset = latents.z_subset, latents.weights, latents.q_subset
    return {
        "R_marg": _masked_sum(log_p_subset, latents.subset_mask, weights),
        "R_cross": _masked_sum(log_p_subset, latents.complement, weights),
        "Q_S": (q_subset.detached() if stl else q_subset).log_prob(z_subset),
        "P_S": prior_log_prob(z_subset),
    }


def masked_value(
    latents: Latents,
    reconstruct: Reconstruct,
    prior_log_prob: PriorLogProb,
    beta: float = 1.0,
    stl: bool = True,
) -> tuple[Tensor, ObjectiveTerms]:
    """Per-sample masked objective `J [L, B]` and its terms, given the latents (which must
    hold z_F and q(z|x)). Also, without gradient, P_F = log p(z_F) and the per-sample ELBO of
    q(z|x) with β = 1 and reconstruction weights 1."""
    q_full, z_full = latents.q_full, latents.z_full
    if q_full is None or z_full is None:
        raise ValueError("the masked objective needs q(z|x) and z_F: draw_latents(full=True)")
    z_subset, weights = latents.z_subset, latents.weights
    # One decoder pass over both latents: [2L, B, d] → [2L, B, M].
    log_p = reconstruct(torch.cat([z_subset, z_full]))
    log_p_subset, log_p_full = log_p.split([z_subset.shape[0], z_full.shape[0]])
    terms = ObjectiveTerms(
        **_subset_terms(latents, log_p_subset, prior_log_prob, stl),
        R_comp=_masked_sum(log_p_full, latents.complement, weights),
        R_full=_masked_sum(log_p_full, latents.avail, weights),
        Q_F=(q_full.detached() if stl else q_full).log_prob(z_full),
        Q_SF=latents.q_subset.log_prob(z_full),
    )
    assert terms.R_comp is not None and terms.Q_F is not None and terms.Q_SF is not None
    with torch.no_grad():
        terms.P_F = prior_log_prob(z_full)
        unit = torch.ones_like(weights)
        terms.elbo = _masked_sum(log_p_full, latents.avail, unit) + terms.P_F - terms.Q_F
    marginal = terms.R_marg + beta * (terms.P_S - terms.Q_S)
    conditional = terms.R_comp + beta * (terms.Q_SF - terms.Q_F)
    return marginal + conditional, terms


def mixture_value(
    latents: Latents,
    reconstruct: Reconstruct,
    prior_log_prob: PriorLogProb,
    beta: float = 1.0,
    stl: bool = True,
) -> tuple[Tensor, ObjectiveTerms]:
    """Per-sample mixture objective `J [L, B]` and its terms: every observed modality is
    reconstructed from z_S ~ q(z|x_S)."""
    log_p_subset = reconstruct(latents.z_subset)
    terms = ObjectiveTerms(**_subset_terms(latents, log_p_subset, prior_log_prob, stl))
    value = terms.R_marg + terms.R_cross + beta * (terms.P_S - terms.Q_S)
    return value, terms


@dataclass
class ObjectiveOutput:
    """The loss to minimise, the per-example objective value, the ELBO when computed, and
    every term for logging."""

    loss: Tensor
    per_example: Tensor
    terms: ObjectiveTerms
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
        out.update({name: value.detach().mean() for name, value in self.terms.named().items()})
        return out

    def logged(self) -> dict[str, float]:
        """`logged_tensors` as Python floats."""
        return {name: float(value) for name, value in self.logged_tensors().items()}


def _output(
    objective: str, value: Tensor, terms: ObjectiveTerms, latents: Latents, elbo: Tensor | None
) -> ObjectiveOutput:
    """loss = Σ_b −logsumexp_l J; the reported value subtracts log L."""
    best = torch.logsumexp(value, dim=0)
    samples = value.shape[0]
    return ObjectiveOutput(
        -best.sum(),
        best.detach() - math.log(samples),
        terms,
        latents.subset_mask,
        objective,
        None if elbo is None else elbo.mean(0),
    )


@OBJECTIVES.register("masked")
def masked_objective(
    model: MultiModalVAE,
    batch: Batch,
    samples: int = 1,
    beta: float = 1.0,
    stl: bool = True,
    subset_mask: Tensor | None = None,
    subset_mode: str = "faithful",
    reconstruction_weights: bool = True,
    elbo: bool = True,
) -> ObjectiveOutput:
    """The proposed objective E_S[L_S(x_S) + L_\\S(x)] with q(z|x_S) as the conditional prior.

    Not a lower bound of log p(x): it can exceed it when q(z|x_S) differs from the average of
    q(z|x) over the data sharing x_S. The ELBO of q(z|x) comes with it at no cost (`elbo` is
    accepted for a common signature)."""
    latents = draw_latents(
        model, batch, samples, subset_mask, subset_mode, reconstruction_weights, full=True
    )
    value, terms = masked_value(
        latents, _reconstruction(model, latents), model.prior.log_prob, beta, stl
    )
    return _output("masked", value, terms, latents, terms.elbo)


@OBJECTIVES.register("mixture")
def mixture_objective(
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
    """The mixture-based objective: reconstruct every observed modality from z ~ q(z|x_S).
    With β = 1 and reconstruction weights 1 it is a lower bound of log p(x) for every S.
    `elbo=True` also computes the ELBO of q(z|x), from its own draw z_F, without gradient."""
    latents = draw_latents(
        model, batch, samples, subset_mask, subset_mode, reconstruction_weights, full=False
    )
    value, terms = mixture_value(
        latents, _reconstruction(model, latents), model.prior.log_prob, beta, stl
    )
    elbo_samples = None
    if elbo:
        with torch.no_grad():
            elbo_samples = full_elbo(model, latents.x, latents.avail, samples)
    return _output("mixture", value, terms, latents, elbo_samples)


def _reconstruction(model: MultiModalVAE, latents: Latents) -> Reconstruct:
    def reconstruct(z: Tensor) -> Tensor:
        return model.reconstruction_log_probs(z, latents.x)

    return reconstruct


def full_elbo(
    model: MultiModalVAE, x: dict[str, Tensor], avail: Tensor, samples: int = 1
) -> Tensor:
    """Per-sample ELBO of the full encoder `[L, B]`: with z_F ~ q(z|x),
    Σ_s a_s log p(x_s | z_F) + log p(z_F) − log q(z_F | x), β = 1 and weights 1. Its mean
    is a lower bound of log p(x_obs) for any encoder."""
    q_full = model.posterior(model.encode_features(x), avail)
    z_full = q_full.rsample(samples)
    log_p = torch.where(avail, model.reconstruction_log_probs(z_full, x), 0.0).sum(-1)
    return log_p + model.prior.log_prob(z_full) - q_full.log_prob(z_full)


class ObjectiveModule(nn.Module):
    """The training step's forward pass: `model` under one objective, chosen when the
    module is built, with its options (L, β, STL, subset sampling). DDP wraps this module,
    so its gradient hooks see the whole computation; checkpoints save `module.model`."""

    def __init__(
        self,
        model: MultiModalVAE,
        objective: str,
        samples: int = 1,
        beta: float = 1.0,
        stl: bool = True,
        subset_mode: str = "faithful",
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.objective_fn: Objective = OBJECTIVES.get(objective)
        self.samples = samples
        self.beta = beta
        self.stl = stl
        self.subset_mode = subset_mode

    @classmethod
    def from_config(cls, model: MultiModalVAE, section: ModelSection) -> ObjectiveModule:
        """The module for `model` with the objective and options of the config's `model`."""
        return cls(
            model,
            section.objective,
            samples=section.samples,
            beta=section.beta,
            stl=section.stl,
            subset_mode=section.subset_mode,
        )

    def forward(self, batch: Batch, beta: float | None = None) -> ObjectiveOutput:
        """The objective on `batch` with `beta` (the training loop passes each step's
        scheduled β, `beta_at_step`), or the module's own β."""
        return self.objective_fn(
            self.model,
            batch,
            samples=self.samples,
            beta=self.beta if beta is None else beta,
            stl=self.stl,
            subset_mode=self.subset_mode,
        )

    def evaluate(self, batch: Batch) -> ObjectiveOutput:
        """The objective as evaluation reports it: one sample, reconstruction weights 1, the
        configured β (not a warm-up's), and the ELBO of q(z|x) beside it."""
        return self.objective_fn(
            self.model,
            batch,
            samples=1,
            beta=self.beta,
            subset_mode=self.subset_mode,
            reconstruction_weights=False,
            elbo=True,
        )


def beta_at_step(section: ModelSection, step: int) -> float:
    """β at optimiser step `step` (0 for the first) under `model.beta_schedule`: with
    W = warmup_steps, s = start and u = min(1, step / W),
    linear β·(s + (1 − s)·u), cosine β·(s + (1 − s)·(1 − cos πu)/2), then β; constant β.
    A pure function of the step, so a resumed run continues the schedule exactly. While
    β < 1 the objective is not a bound on log p(x) (docs/math.md §2.1)."""
    schedule = section.beta_schedule
    if schedule.kind == "constant" or step >= schedule.warmup_steps:
        return section.beta
    progress = max(step, 0) / schedule.warmup_steps
    if schedule.kind == "cosine":
        progress = 0.5 * (1.0 - math.cos(math.pi * progress))
    return section.beta * (schedule.start + (1.0 - schedule.start) * progress)


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
