"""Latent classification (docs/math.md §4.6): a logistic-regression probe on the posterior means of
q(z | x_S), fitted on a fixed number of labelled training rows and scored on the test rows,
for each conditioning subset S."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import Tensor

from mmtrain.batch import Batch
from mmtrain.evaluation.subsets import Subset
from mmtrain.model import MultiModalVAE


@torch.no_grad()
def posterior_means(
    model: MultiModalVAE, data: Batch, subset: Subset, batch_size: int = 512
) -> Tensor:
    """Means of q(z | x_S) `[N, d]` (the mixture mean for mixture posteriors)."""
    pieces = []
    for _, part in data.chunks(batch_size):
        mask = subset.mask(part.size, model.num_modalities, part.avail.device)
        pieces.append(model.encode(part, mask).mean)
    return torch.cat(pieces) if pieces else torch.zeros(0, model.latent_dim)


def probe_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    seed: int = 0,
) -> float:
    """Test accuracy of standardised logistic regression fitted on the training rows; NaN
    when either side is empty, the training labels' class when they hold only one."""
    if len(test_labels) == 0 or len(train_labels) == 0:
        return float("nan")
    classes = np.unique(train_labels)
    if len(classes) == 1:
        return float(np.mean(test_labels == classes[0]))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    with threadpool_limits(1):
        probe.fit(train_features, train_labels)
        return float(np.mean(probe.predict(test_features) == test_labels))


def choose_rows(candidates: Tensor, count: int, seed: int) -> Tensor:
    """`count` of the `candidates` row indices, drawn without replacement (seeded)."""
    if candidates.numel() <= count:
        return candidates
    generator = torch.Generator().manual_seed(seed)
    return candidates[torch.randperm(candidates.numel(), generator=generator)[:count]].sort().values


def latent_classification(
    model: MultiModalVAE,
    train: Batch,
    train_labels: Tensor,
    test: Batch,
    test_labels: Tensor,
    subsets: Sequence[Subset],
    num_train: int = 500,
    seed: int = 0,
    batch_size: int = 512,
) -> dict[str, dict[str, float]]:
    """`{S: {"accuracy", "train_rows", "test_rows"}}`: the probe fitted on `num_train`
    training rows that observe S (the same draw for every S where possible)."""
    out = {}
    for subset in subsets:
        fit = torch.nonzero(subset.observed(train.avail) & (train_labels >= 0)).flatten()
        fit = choose_rows(fit, num_train, seed)
        score = torch.nonzero(subset.observed(test.avail) & (test_labels >= 0)).flatten()
        if fit.numel() == 0 or score.numel() == 0:
            out[subset.name] = {
                "accuracy": float("nan"),
                "train_rows": int(fit.numel()),
                "test_rows": int(score.numel()),
            }
            continue
        z_fit = posterior_means(model, train.take(fit), subset, batch_size)
        z_score = posterior_means(model, test.take(score), subset, batch_size)
        accuracy = probe_accuracy(
            z_fit.double().numpy(),
            train_labels[fit].numpy(),
            z_score.double().numpy(),
            test_labels[score].numpy(),
            seed,
        )
        out[subset.name] = {
            "accuracy": accuracy,
            "train_rows": int(fit.numel()),
            "test_rows": int(score.numel()),
        }
    return out
