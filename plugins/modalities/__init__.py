"""Built-in modality plugins: vector, image, text and label."""

from . import image, label, text, vector

__all__ = ["image", "label", "text", "vector"]
