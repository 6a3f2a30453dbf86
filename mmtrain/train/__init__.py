"""Training: one loop on Accelerate, launched in one process, by `accelerate launch`, or by
Ray Train. The loop is imported on first use, so that `mmtrain.train.monitor` (which the
config's validation uses) does not pull in Accelerate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmtrain.train.loop import TrainingDiverged, TrainingInterrupted, train

_LOOP_NAMES = ("TrainingDiverged", "TrainingInterrupted", "train")


def __getattr__(name: str) -> Any:
    if name not in _LOOP_NAMES:
        raise AttributeError(f"module 'mmtrain.train' has no attribute {name!r}")
    from mmtrain.train import loop

    return getattr(loop, name)


__all__ = ["TrainingDiverged", "TrainingInterrupted", "train"]
