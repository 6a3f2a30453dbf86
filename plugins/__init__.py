"""Built-in plugins of mmtrain: aggregators and modalities."""

from mmtrain.plugins import aggregators, modalities

__all__ = ["aggregators", "modalities"]
