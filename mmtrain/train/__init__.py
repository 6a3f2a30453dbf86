"""Training: one loop on Accelerate, launched in one process, by `accelerate launch`, or by
Ray Train."""

from mmtrain.train.loop import TrainingDiverged, TrainingInterrupted, build_model, train

__all__ = ["TrainingDiverged", "TrainingInterrupted", "build_model", "train"]
