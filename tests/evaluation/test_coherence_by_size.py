"""Coherence by the number of given modalities against a brute-force average: a fake
generator whose coherence(S → j) is a known function of S and j, read by classifiers that
return the first value of what they are given."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mmtrain.batch import Batch
from mmtrain.evaluation.coherence import coherence_by_size, cross_coherence
from mmtrain.evaluation.subsets import Subset, enumerate_subsets, proper_subsets_by_size

ROWS = 110
CLASSES = 5


class FirstValue:
    """Stands in for a `TrainedClassifier`: predicts the first value of each row."""

    def predict(self, x: torch.Tensor, generated: bool = False) -> torch.Tensor:
        return x[:, 0].long()


def known_coherence(members: tuple[int, ...], target: int) -> float:
    """coherence(S → j) for j ∉ S: a fraction of the rows that depends on S and j."""
    code = sum(2**i for i in members)
    return ((5 * code + 3 * target) % 11) / 10


def correct_rows(members: tuple[int, ...], target: int) -> int:
    """How many of the rows the fake generator gets right for S → j; all of them for
    j ∈ S (reconstruction), which must not count."""
    if target in members:
        return ROWS
    return round(known_coherence(members, target) * ROWS)


class FakeGenerator:
    """Generates, for the first `correct_rows(S, j)` rows of the data, the row's label,
    and a wrong label for the others; counts the subsets it is asked about."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.calls: list[str] = []

    def __call__(self, batch: Batch, subset: Subset) -> dict[str, torch.Tensor]:
        self.calls.append(subset.name)
        index, labels = batch.extras["row"], batch.labels
        out = {}
        for j, name in enumerate(self.names):
            right = index < correct_rows(subset.members, j)
            value = torch.where(right, labels, (labels + 1) % CLASSES)
            out[name] = value.double()[:, None]
        return out


def fake_data(names: list[str]) -> tuple[Batch, torch.Tensor]:
    labels = torch.arange(ROWS) % CLASSES
    x = {name: torch.zeros(ROWS, 1) for name in names}
    batch = Batch(x, torch.ones(ROWS, len(names), dtype=torch.bool), labels)
    batch.extras["row"] = torch.arange(ROWS)
    return batch, labels


def brute_force(names: list[str], subsets_of: dict[int, list[tuple[int, ...]]]) -> list[float]:
    means = []
    for k in sorted(subsets_of):
        values = [
            correct_rows(members, j) / ROWS
            for members in subsets_of[k]
            for j in range(len(names))
            if j not in members
        ]
        means.append(sum(values) / len(values))
    return means


def test_mean_coherence_by_size_is_the_brute_force_average_over_all_subsets() -> None:
    names = ["a", "b", "c", "d"]
    batch, labels = fake_data(names)
    classifiers = dict.fromkeys(names, FirstValue())
    generate = FakeGenerator(names)
    # the evaluation's own subsets: every subset of M = 4, so nothing is scored again
    evaluated = enumerate_subsets(names)
    known = cross_coherence(batch, labels, evaluated, classifiers, generate, batch_size=32)
    calls = len(generate.calls)
    result = coherence_by_size(batch, labels, names, classifiers, generate, known, batch_size=32)
    assert len(generate.calls) == calls and result["extra"] == {}
    every = {k: list(itertools.combinations(range(4), k)) for k in (1, 2, 3)}
    expected = brute_force(names, every)
    assert [entry["given"] for entry in result["sizes"]] == [1, 2, 3]
    assert [entry["coherence"] for entry in result["sizes"]] == pytest.approx(expected, abs=1e-12)
    assert [entry["subsets"] for entry in result["sizes"]] == [4, 6, 4]
    assert [entry["pairs"] for entry in result["sizes"]] == [12, 12, 4]
    assert result["all_subsets"] == {"1": True, "2": True, "3": True}
    # were the targets inside S counted (reconstruction, always right), the means would differ
    with_own = [
        sum(correct_rows(s, j) / ROWS for s in every[k] for j in range(4)) / (len(every[k]) * 4)
        for k in (1, 2, 3)
    ]
    assert all(abs(a - b) > 1e-3 for a, b in zip(with_own, expected))


def test_subsets_missing_from_the_evaluation_are_scored_and_reused_ones_are_not() -> None:
    """M = 5 with the evaluation capped at 4 modalities (singletons, leave-one-out, all):
    the 20 subsets of 2 and 3 modalities are scored for the by-size means, the others reused."""
    names = ["a", "b", "c", "d", "e"]
    batch, labels = fake_data(names)
    classifiers = dict.fromkeys(names, FirstValue())
    generate = FakeGenerator(names)
    evaluated = enumerate_subsets(names, max_modalities=4)
    assert len(evaluated) == 11
    known = cross_coherence(batch, labels, evaluated, classifiers, generate, batch_size=ROWS)
    generate.calls.clear()
    result = coherence_by_size(batch, labels, names, classifiers, generate, known, batch_size=ROWS)
    assert sorted(set(generate.calls)) == sorted(result["extra"])
    assert len(result["extra"]) == math.comb(5, 2) + math.comb(5, 3)
    assert all(len(name.split("+")) in (2, 3) for name in result["extra"])
    every = {k: list(itertools.combinations(range(5), k)) for k in (1, 2, 3, 4)}
    expected = brute_force(names, every)
    assert [e["coherence"] for e in result["sizes"]] == pytest.approx(expected, abs=1e-12)


def test_beyond_per_size_subsets_are_drawn_at_random_with_a_seed() -> None:
    names = [f"m{i}" for i in range(6)]
    batch, labels = fake_data(names)
    classifiers = dict.fromkeys(names, FirstValue())
    result = coherence_by_size(
        batch, labels, names, classifiers, FakeGenerator(names), per_size=6, seed=3
    )
    chosen = proper_subsets_by_size(names, per_size=6, seed=3)
    assert chosen == proper_subsets_by_size(names, per_size=6, seed=3)  # seeded
    assert chosen != proper_subsets_by_size(names, per_size=6, seed=4)
    # C(6, 1) = C(6, 5) = 6: all of them; C(6, 2) = 15, C(6, 3) = 20, C(6, 4) = 15: six each
    assert result["all_subsets"] == {"1": True, "2": False, "3": False, "4": False, "5": True}
    drawn = {k: [s.members for s in subsets] for k, (subsets, _) in chosen.items()}
    for k, members in drawn.items():
        assert len(members) == 6 and len(set(members)) == 6
        assert all(len(m) == k for m in members)
    assert [e["coherence"] for e in result["sizes"]] == pytest.approx(
        brute_force(names, drawn), abs=1e-12
    )
    assert [e["subsets"] for e in result["sizes"]] == [6] * 5


def test_rows_without_labels_or_with_s_missing_leave_pairs_out() -> None:
    """A pair (S, j) with no row observing S adds nothing to its mean."""
    names = ["a", "b", "c"]
    batch, labels = fake_data(names)
    batch.avail[:, 0] = False  # nobody observes a: every S ∋ a has no rows
    classifiers = dict.fromkeys(names, FirstValue())
    result = coherence_by_size(batch, labels, names, classifiers, FakeGenerator(names))
    without_a = {1: [(1,), (2,)], 2: [(1, 2)]}
    assert [e["pairs"] for e in result["sizes"]] == [4, 1]
    assert [e["coherence"] for e in result["sizes"]] == pytest.approx(
        brute_force(names, without_a), abs=1e-12
    )
