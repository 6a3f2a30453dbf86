"""Cross-generation and joint coherence (docs/math.md §4.6).

Coherence of S → j: for each row observing S, draw z ~ q(z | x_S), decode the mean of x_j
and classify it with modality j's classifier; the accuracy against the row's true label.
Joint coherence: decode every modality from the same prior draw z ~ p(z) and count the
draws whose predicted labels all agree.

Coherence by the number of given modalities (as MoPoE and MMVAE+ plot it for PolyMNIST):
for k = 1, …, M − 1, the mean of coherence(S → j) over the subsets S of k modalities and the
targets j ∉ S (`coherence_by_size`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mmtrain.batch import Batch
from mmtrain.evaluation.classifiers import TrainedClassifier
from mmtrain.evaluation.subsets import Subset, proper_subsets_by_size
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


#: `{S: {j: {"accuracy", "rows"}}}`, as `cross_coherence` returns it
CoherenceTable = Mapping[str, Mapping[str, Mapping[str, float]]]


def mean_coherence_by_size(
    coherence: CoherenceTable, by_size: Mapping[int, Sequence[Subset]], targets: Sequence[str]
) -> list[dict[str, Any]]:
    """Per k: the mean of coherence(S → j) over the subsets S of size k in `by_size` and the
    targets j ∉ S, each (S, j) pair weighted alike; pairs without rows are left out.
    `[{"given": k, "coherence", "subsets", "pairs"}]`."""
    out = []
    for k in sorted(by_size):
        values = []
        for subset in by_size[k]:
            for target in targets:
                entry = coherence.get(subset.name, {}).get(target)
                if target in subset.names or entry is None or not entry["rows"]:
                    continue
                if math.isfinite(entry["accuracy"]):
                    values.append(float(entry["accuracy"]))
        mean = sum(values) / len(values) if values else float("nan")
        out.append(
            {"given": k, "coherence": mean, "subsets": len(by_size[k]), "pairs": len(values)}
        )
    return out


@torch.no_grad()
def coherence_by_size(
    data: Batch,
    labels: Tensor,
    modality_names: Sequence[str],
    classifiers: dict[str, TrainedClassifier],
    generate: GenerateFn,
    known: CoherenceTable | None = None,
    per_size: int = 10,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Mean coherence when k = 1, …, M − 1 modalities are given (`mean_coherence_by_size`)
    over the subsets `proper_subsets_by_size(modality_names, per_size, seed)` chooses.
    Subsets already in `known` (the evaluation's `cross_coherence`) are reused; the others
    are scored here and returned under `"extra"`. `"all_subsets"`: per k, whether every
    subset of size k was used (else `per_size` drawn at random)."""
    known = known or {}
    chosen = proper_subsets_by_size(modality_names, per_size, seed)
    missing = [s for subsets, _ in chosen.values() for s in subsets if s.name not in known]
    extra = cross_coherence(data, labels, missing, classifiers, generate, batch_size)
    by_size = {k: subsets for k, (subsets, _) in chosen.items()}
    return {
        "sizes": mean_coherence_by_size({**known, **extra}, by_size, list(classifiers)),
        "all_subsets": {str(k): complete for k, (_, complete) in chosen.items()},
        "per_size": per_size,
        "seed": seed,
        "subsets": {str(k): [s.name for s in subsets] for k, subsets in by_size.items()},
        "extra": extra,
    }
