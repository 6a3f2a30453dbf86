"""`Batch`: what flows from the data layer into the model, and the row operations every
consumer needs (take, concatenate, chunk, move), written once."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Batch:
    """Per-modality tensors `[B, ...]` and the availability mask `[B, M]` (model order).

    `labels` are the class labels used by evaluation (`[B]`, or `[B, k]` for continuous
    ground truth); `extras` hold every label column by name. Missing entries of `x` may hold
    anything, NaN included: the model replaces them before use.
    """

    x: dict[str, Tensor]
    avail: Tensor
    labels: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.avail.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        return self._map(lambda value: value.to(device))

    def take(self, index: Tensor | slice) -> Batch:
        """The rows `index` (a tensor of row numbers, a boolean row mask or a slice)."""
        return self._map(lambda value: value[index])

    def chunks(self, size: int) -> Iterator[tuple[slice, Batch]]:
        """Consecutive pieces of at most `size` rows, with the slice each one came from."""
        for start in range(0, self.size, size):
            part = slice(start, min(start + size, self.size))
            yield part, self.take(part)

    @staticmethod
    def cat(batches: Sequence[Batch]) -> Batch:
        """The rows of `batches` one after another (they share modalities and label columns)."""
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        labels = None
        if first.labels is not None:
            labels = torch.cat([b.labels for b in batches])  # type: ignore[misc]
        return Batch(
            {name: torch.cat([b.x[name] for b in batches]) for name in first.x},
            torch.cat([b.avail for b in batches]),
            labels,
            {name: torch.cat([b.extras[name] for b in batches]) for name in first.extras},
        )

    def _map(self, apply: Callable[[Tensor], Tensor]) -> Batch:
        return Batch(
            {name: apply(value) for name, value in self.x.items()},
            apply(self.avail),
            None if self.labels is None else apply(self.labels),
            {name: apply(value) for name, value in self.extras.items()},
        )
