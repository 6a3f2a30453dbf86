"""Conditioning subsets S of the modalities: which ones an evaluation visits, their names,
and the rows of a batch in which all of S is observed."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mmtrain.errors import ConfigError

#: the name of the empty subset (conditioning on nothing: the prior)
EMPTY_NAME = "∅"


@dataclass(frozen=True)
class Subset:
    """A set of modalities, by their indices in the model's modality order."""

    members: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        """`mnist+text`, or `∅` for the empty set."""
        return "+".join(self.names) if self.names else EMPTY_NAME

    @property
    def size(self) -> int:
        return len(self.members)

    def __contains__(self, index: object) -> bool:
        return index in self.members

    def mask(self, rows: int, num_modalities: int, device: torch.device | None = None) -> Tensor:
        """`[rows, M]` booleans, true in the columns of S."""
        mask = torch.zeros(rows, num_modalities, dtype=torch.bool, device=device)
        mask[:, list(self.members)] = True
        return mask

    def observed(self, avail: Tensor) -> Tensor:
        """`[B]` booleans: rows whose availability mask contains all of S."""
        if not self.members:
            return torch.ones(avail.shape[0], dtype=torch.bool, device=avail.device)
        return avail[:, list(self.members)].bool().all(1)

    def with_member(self, index: int, modality_names: Sequence[str]) -> Subset:
        """S ∪ {index}, members kept in model order."""
        members = tuple(sorted({*self.members, index}))
        return Subset(members, tuple(modality_names[i] for i in members))


def make_subset(members: Sequence[int], modality_names: Sequence[str]) -> Subset:
    ordered = tuple(sorted(set(members)))
    if any(not 0 <= i < len(modality_names) for i in ordered):
        raise ConfigError(
            f"subset {list(members)} names modalities outside 0..{len(modality_names) - 1}"
        )
    return Subset(ordered, tuple(modality_names[i] for i in ordered))


def enumerate_subsets(modality_names: Sequence[str], max_modalities: int = 4) -> list[Subset]:
    """The non-empty subsets an evaluation visits, smallest first.

    With at most `max_modalities` modalities, all `2^M − 1` of them; with more, the
    singletons, the leave-one-out subsets and the full set (`2M + 1` subsets), which keeps
    the cost linear in M.
    """
    if max_modalities < 1:
        raise ConfigError(f"max_modalities must be at least 1, got {max_modalities}")
    m = len(modality_names)
    if m == 0:
        raise ConfigError("a model needs at least one modality to evaluate")
    if m <= max_modalities:
        groups: list[tuple[int, ...]] = [
            combo for size in range(1, m + 1) for combo in itertools.combinations(range(m), size)
        ]
    else:
        singles = [(i,) for i in range(m)]
        leave_one_out = [tuple(j for j in range(m) if j != i) for i in range(m)]
        groups = [*singles, *leave_one_out, tuple(range(m))]
    seen: dict[tuple[int, ...], Subset] = {}
    for group in groups:
        seen.setdefault(group, make_subset(group, modality_names))
    return list(seen.values())


def proper_subsets_by_size(
    modality_names: Sequence[str], per_size: int = 10, seed: int = 0
) -> dict[int, tuple[list[Subset], bool]]:
    """For k = 1, …, M − 1: the subsets of k modalities and whether they are all of them.

    Every subset of size k when there are at most `per_size` (with the default 10, every
    proper subset of M ≤ 5 modalities: 30 for M = 5); otherwise `per_size` distinct ones
    drawn at random, the same for the same `seed`. Subsets are in model order, smallest
    first."""
    if per_size < 1:
        raise ConfigError(f"per_size must be at least 1, got {per_size}")
    m = len(modality_names)
    rng = random.Random(seed)
    out: dict[int, tuple[list[Subset], bool]] = {}
    for k in range(1, m):
        complete = math.comb(m, k) <= per_size
        if complete:
            groups = list(itertools.combinations(range(m), k))
        else:
            drawn: set[tuple[int, ...]] = set()
            while len(drawn) < per_size:
                drawn.add(tuple(sorted(rng.sample(range(m), k))))
            groups = sorted(drawn)
        out[k] = ([make_subset(group, modality_names) for group in groups], complete)
    return out


def empty_subset() -> Subset:
    return Subset((), ())


def parse_subset(text: str, modality_names: Sequence[str]) -> Subset:
    """`"mnist+text"` → the subset of those modalities; `"∅"` or `""` → the empty set."""
    if text.strip() in ("", EMPTY_NAME):
        return empty_subset()
    names = [part.strip() for part in text.split("+")]
    unknown = [name for name in names if name not in modality_names]
    if unknown:
        raise ConfigError(
            f"subset {text!r} names unknown modalities {unknown}; the model has "
            f"{', '.join(modality_names)}"
        )
    return make_subset([list(modality_names).index(name) for name in names], modality_names)
