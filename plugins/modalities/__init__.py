"""Built-in modality plugins."""

from mmtrain.plugins.modalities import vector

__all__ = ["vector"]
