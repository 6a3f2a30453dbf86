"""mmtrain: multi-modal VAEs with permutation-invariant aggregators and masked objectives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmtrain._version import __version__
from mmtrain.errors import CheckpointError, ConfigError, DataError, MMTrainError, PluginError

if TYPE_CHECKING:
    from mmtrain.batch import Batch
    from mmtrain.model import MultiModalVAE

#: imported on first use, so that `import mmtrain` (and the CLI's `--help`) stays light
_LAZY = {"Batch": "mmtrain.batch", "MultiModalVAE": "mmtrain.model"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'mmtrain' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def load(path: str, device: str = "cpu") -> MultiModalVAE:
    """Rebuild a trained model from an inference bundle, a checkpoint or a run directory
    (`mmtrain.bundle.resolve_model` says which checkpoint)."""
    from mmtrain.bundle import load as _load

    return _load(path, device)


__all__ = [
    "Batch",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MMTrainError",
    "MultiModalVAE",
    "PluginError",
    "__version__",
    "load",
]
