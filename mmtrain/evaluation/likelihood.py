"""Importance-sampled joint and conditional log-likelihoods per conditioning subset.

For a subset S, `log p̂(x_S)` follows docs/math.md §4.4 with the proposal q(z | x_S):

    log p̂(x_S) = logsumexp_l [ Σ_{s∈S} log p(x_s | z_l) + log p(z_l) − log q(z_l | x_S) ] − log L,

each row using only its observed modalities (rows where S is not fully observed are left
out). Conditionals are differences of two such estimates with their own proposals,

    log p̂(x_j | x_S) = log p̂(x_{S∪{j}}) − log p̂(x_S),   log p̂(x_∅) = 0,

consistent as L grows. Every estimate carries its Monte-Carlo standard error (the delta-method
one of `objectives.ImportanceEstimate`; a difference's adds the two in quadrature, a mean over
rows combines them as sqrt(Σ se²) / N). Rows are processed in batches and samples in chunks, so memory is
bounded by `batch_size × chunk_size` decoder outputs whatever L is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mmtrain.batch import Batch
from mmtrain.errors import ConfigError
from mmtrain.evaluation.subsets import Subset, empty_subset
from mmtrain.model import MultiModalVAE
from mmtrain.objectives import ImportanceEstimate, combined_stderr, importance_sampling


@torch.no_grad()
def subset_importance_sampling(
    model: MultiModalVAE,
    batch: Batch,
    subset: Subset,
    num_samples: int,
    chunk_size: int = 64,
) -> ImportanceEstimate:
    """log p̂(x_S) `[B]` with proposal q(z | x_S) and its Monte-Carlo standard error; every
    row must observe all of S. log p̂(x_∅) = 0 exactly.

    `objectives.importance_sampling` on a batch whose availability is S, with only the
    decoders of S running.
    """
    if num_samples < 1 or chunk_size < 1:
        raise ConfigError("num_samples and chunk_size must be at least 1")
    if not subset.members:
        zeros = batch.avail.new_zeros(batch.size, dtype=torch.float32)
        return ImportanceEstimate(zeros, zeros.clone())
    if not bool(subset.observed(batch.avail).all()):
        raise ConfigError(f"some rows do not observe all of {subset.name}; select rows first")
    mask = subset.mask(batch.size, model.num_modalities, batch.avail.device)
    names = [model.modality_names[i] for i in subset.members]
    return importance_sampling(
        model, Batch(batch.x, mask), num_samples, chunk_size=chunk_size, modalities=names
    )


def subset_log_likelihood(
    model: MultiModalVAE,
    batch: Batch,
    subset: Subset,
    num_samples: int,
    chunk_size: int = 64,
) -> Tensor:
    """log p̂(x_S) `[B]`: `subset_importance_sampling(...).log_likelihood`."""
    return subset_importance_sampling(model, batch, subset, num_samples, chunk_size).log_likelihood


@dataclass
class LikelihoodTable:
    """Per-row estimates `log p̂(x_S)` and their Monte-Carlo standard errors (NaN where S is
    not observed) and their summaries."""

    modality_names: list[str]
    num_samples: int
    per_row: dict[str, Tensor] = field(default_factory=dict)
    subsets: dict[str, Subset] = field(default_factory=dict)
    per_row_mc_stderr: dict[str, Tensor] = field(default_factory=dict)

    def joint(self) -> dict[str, dict[str, float]]:
        """For each subset: mean log p̂(x_S) per example, its standard error over rows
        (`stderr`), its Monte-Carlo standard error (`mc_stderr`) and the row count."""
        out = {}
        for name, values in self.per_row.items():
            rows = ~values.isnan()
            out[name] = _summary(values[rows], self._mc(name)[rows])
        return out

    def conditional(self) -> dict[str, dict[str, dict[str, float]]]:
        """`{S: {j: summary}}` of log p̂(x_j | x_S) over rows observing S ∪ {j}, for j ∉ S
        and S ∪ {j} among the evaluated subsets (S = ∅ gives the marginal log p̂(x_j))."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        conditioning = [empty_subset(), *self.subsets.values()]
        for subset in conditioning:
            row: dict[str, dict[str, float]] = {}
            base = self.per_row.get(subset.name) if subset.members else None
            for j, target in enumerate(self.modality_names):
                if j in subset:
                    continue
                joined = subset.with_member(j, self.modality_names).name
                if joined not in self.per_row:
                    continue
                values, errors = self.per_row[joined], self._mc(joined)
                if base is not None:
                    values = values - base
                    errors = torch.hypot(errors, self._mc(subset.name))
                rows = ~values.isnan()
                row[target] = _summary(values[rows], errors[rows])
            if row:
                out[subset.name] = row
        return out

    def _mc(self, name: str) -> Tensor:
        values = self.per_row[name]
        return self.per_row_mc_stderr.get(name, torch.full_like(values, math.nan))


def _summary(values: Tensor, mc_stderr: Tensor) -> dict[str, float]:
    n = int(values.numel())
    if n == 0:
        return {"mean": math.nan, "stderr": math.nan, "mc_stderr": math.nan, "rows": 0}
    mean = float(values.double().mean())
    stderr = float(values.double().std() / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": mean, "stderr": stderr, "mc_stderr": combined_stderr(mc_stderr), "rows": n}


@torch.no_grad()
def log_likelihood_table(
    model: MultiModalVAE,
    data: Batch,
    subsets: Sequence[Subset],
    num_samples: int,
    batch_size: int = 256,
    chunk_size: int = 64,
) -> LikelihoodTable:
    """`log p̂(x_S)` for every subset and every row that observes it, batched over rows."""
    table = LikelihoodTable(list(model.modality_names), num_samples)
    for subset in subsets:
        values = torch.full((data.size,), math.nan, dtype=torch.float64)
        errors = torch.full((data.size,), math.nan, dtype=torch.float64)
        rows = torch.nonzero(subset.observed(data.avail)).flatten()
        if rows.numel():
            selected = data.take(rows)
            pieces = []
            for _, part in selected.chunks(batch_size):
                pieces.append(
                    subset_importance_sampling(model, part, subset, num_samples, chunk_size)
                )
            values[rows] = torch.cat([p.log_likelihood for p in pieces]).double()
            errors[rows] = torch.cat([p.stderr for p in pieces]).double()
        table.per_row[subset.name] = values
        table.per_row_mc_stderr[subset.name] = errors
        table.subsets[subset.name] = subset
    return table
