"""Importance-sampled joint and conditional log-likelihoods per conditioning subset.

For a subset S, `log p̂(x_S)` follows SPEC §4.4 with the proposal q(z | x_S):

    log p̂(x_S) = logsumexp_l [ Σ_{s∈S} log p(x_s | z_l) + log p(z_l) − log q(z_l | x_S) ] − log L,

each row using only its observed modalities (rows where S is not fully observed are left
out). Conditionals are differences of two such estimates with their own proposals,

    log p̂(x_j | x_S) = log p̂(x_{S∪{j}}) − log p̂(x_S),   log p̂(x_∅) = 0,

consistent as L grows. Rows are processed in batches and samples in chunks, so memory is
bounded by `batch_size × chunk_size` decoder outputs whatever L is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mmtrain.errors import ConfigError
from mmtrain.evaluation.data import iter_chunks, take_rows
from mmtrain.evaluation.subsets import Subset, empty_subset
from mmtrain.model import Batch, MultiModalVAE
from mmtrain.objectives import importance_log_likelihood


@torch.no_grad()
def subset_log_likelihood(
    model: MultiModalVAE,
    batch: Batch,
    subset: Subset,
    num_samples: int,
    chunk_size: int = 64,
) -> Tensor:
    """log p̂(x_S) `[B]` with proposal q(z | x_S); every row must observe all of S.

    `objectives.importance_log_likelihood` on a batch whose availability is S, with only the
    decoders of S running.
    """
    if num_samples < 1 or chunk_size < 1:
        raise ConfigError("num_samples and chunk_size must be at least 1")
    if not subset.members:
        return batch.avail.new_zeros(batch.size, dtype=torch.float32)
    if not bool(subset.observed(batch.avail).all()):
        raise ConfigError(f"some rows do not observe all of {subset.name}; select rows first")
    mask = subset.mask(batch.size, model.num_modalities, batch.avail.device)
    names = [model.modality_names[i] for i in subset.members]
    return importance_log_likelihood(
        model, Batch(batch.x, mask), num_samples, chunk_size=chunk_size, modalities=names
    )


@dataclass
class LikelihoodTable:
    """Per-row estimates `log p̂(x_S)` (NaN where S is not observed) and their summaries."""

    modality_names: list[str]
    num_samples: int
    per_row: dict[str, Tensor] = field(default_factory=dict)
    subsets: dict[str, Subset] = field(default_factory=dict)

    def joint(self) -> dict[str, dict[str, float]]:
        """For each subset: mean log p̂(x_S) per example, its standard error and row count."""
        out = {}
        for name, values in self.per_row.items():
            out[name] = _summary(values[~values.isnan()])
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
                values = self.per_row[joined]
                if base is not None:
                    values = values - base
                row[target] = _summary(values[~values.isnan()])
            if row:
                out[subset.name] = row
        return out


def _summary(values: Tensor) -> dict[str, float]:
    n = int(values.numel())
    if n == 0:
        return {"mean": math.nan, "stderr": math.nan, "rows": 0}
    mean = float(values.double().mean())
    stderr = float(values.double().std() / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": mean, "stderr": stderr, "rows": n}


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
        rows = torch.nonzero(subset.observed(data.avail)).flatten()
        if rows.numel():
            selected = take_rows(data, rows)
            pieces = []
            for _, part in iter_chunks(selected, batch_size):
                pieces.append(subset_log_likelihood(model, part, subset, num_samples, chunk_size))
            values[rows] = torch.cat(pieces).double()
        table.per_row[subset.name] = values
        table.subsets[subset.name] = subset
    return table
