"""Cross-generation and joint coherence (docs/math.md §4.6).

Coherence of S → j: for each row observing S, draw z ~ q(z | x_S), decode the mean of x_j
and classify it with modality j's classifier; the accuracy against the row's true label.
Joint coherence: decode every modality from the same prior draw z ~ p(z) and count the
draws whose predicted labels all agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from mmtrain.batch import Batch
from mmtrain.evaluation.classifiers import TrainedClassifier
from mmtrain.evaluation.subsets import Subset
from mmtrain.model import MultiModalVAE

#: (batch, subset) → generated values per target modality, `{name: [B, *event]}`
GenerateFn = Callable[[Batch, Subset], dict[str, Tensor]]


def decoder_means(model: MultiModalVAE, z: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    """The decoder means of `names` for latents `z [B, d]`."""
    out = {}
    for name in names:
        modality = model.modalities[name]
        out[name] = modality.likelihood.mean(modality.decode(z))
    return out


def conditional_generator(model: MultiModalVAE) -> GenerateFn:
    """Decoder means of every modality from one draw z ~ q(z | x_S) per row."""

    @torch.no_grad()
    def generate(batch: Batch, subset: Subset) -> dict[str, Tensor]:
        q = model.encode(batch, subset.mask(batch.size, model.num_modalities, batch.avail.device))
        z = q.rsample(1)[0]
        return decoder_means(model, z, model.modality_names)

    return generate


@torch.no_grad()
def cross_coherence(
    data: Batch,
    labels: Tensor,
    subsets: Sequence[Subset],
    classifiers: dict[str, TrainedClassifier],
    generate: GenerateFn,
    batch_size: int = 256,
) -> dict[str, dict[str, dict[str, float]]]:
    """`{S: {j: {"accuracy", "rows"}}}` over the rows that observe S and have a label ≥ 0.

    `generate` makes the values to classify; `conditional_generator(model)` is the model's
    cross-generation, and any stand-in (a perfect generator in the tests) may replace it.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    known = labels >= 0
    for subset in subsets:
        rows = torch.nonzero(subset.observed(data.avail) & known).flatten()
        correct = dict.fromkeys(classifiers, 0)
        if rows.numel():
            selected = data.take(rows)
            selected_labels = labels[rows]
            for part, piece in selected.chunks(batch_size):
                generated = generate(piece, subset)
                truth = selected_labels[part]
                for name, classifier in classifiers.items():
                    predicted = classifier.predict(generated[name], generated=True)
                    correct[name] += int((predicted == truth).sum())
        total = int(rows.numel())
        out[subset.name] = {
            name: {"accuracy": correct[name] / total if total else float("nan"), "rows": total}
            for name in classifiers
        }
    return out


@torch.no_grad()
def joint_coherence_of(
    generated: dict[str, Tensor], classifiers: dict[str, TrainedClassifier]
) -> float:
    """Fraction of rows whose generated modalities all get the same predicted label."""
    predictions = torch.stack(
        [classifiers[name].predict(generated[name], generated=True) for name in classifiers]
    )
    if predictions.shape[1] == 0:
        return float("nan")
    return float((predictions == predictions[:1]).all(0).double().mean())


@torch.no_grad()
def joint_coherence(
    model: MultiModalVAE,
    classifiers: dict[str, TrainedClassifier],
    num_samples: int = 1000,
    batch_size: int = 256,
) -> float:
    """Joint coherence of `num_samples` prior draws, decoded in batches."""
    agree = 0.0
    done = 0
    while done < num_samples:
        n = min(batch_size, num_samples - done)
        z = model.prior.sample(n)
        generated = decoder_means(model, z, list(classifiers))
        agree += joint_coherence_of(generated, classifiers) * n
        done += n
    return agree / num_samples if num_samples else float("nan")
