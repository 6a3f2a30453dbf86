"""Training: one loop on Accelerate, launched in one process, by `accelerate launch`, or by
Ray Train."""

from mmtrain.train.loop import TrainingDiverged, TrainingInterrupted, train

__all__ = ["TrainingDiverged", "TrainingInterrupted", "train"]
