"""mmtrain: multi-modal VAEs with permutation-invariant aggregators and masked objectives."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmtrain._version import __version__
from mmtrain.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    HubError,
    MMTrainError,
    PluginError,
)

if TYPE_CHECKING:
    from mmtrain.batch import Batch
    from mmtrain.inference import InferenceModel, Posterior
    from mmtrain.model import MultiModalVAE

#: imported on first use, so that `import mmtrain` (and the CLI's `--help`) stays light
_LAZY = {
    "Batch": "mmtrain.batch",
    "InferenceModel": "mmtrain.inference",
    "MultiModalVAE": "mmtrain.model",
    "Posterior": "mmtrain.inference",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'mmtrain' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def load(path: str | Path, device: str = "cpu") -> InferenceModel:
    """A trained model, ready for inference on raw dataset rows (`mmtrain.inference`), from
    an exported bundle, a checkpoint, a run directory (its best checkpoint when training
    kept one, else its newest; `mmtrain.bundle.resolve_model`) or a bundle on the Hugging
    Face Hub, `"hf://ORG/NAME[@REVISION]"` (downloaded into the Hugging Face cache; under
    `HF_HUB_OFFLINE=1` read from it). `.model` is the `MultiModalVAE`."""
    from mmtrain.inference import load as _load

    return _load(path, device)


__all__ = [
    "Batch",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "HubError",
    "InferenceModel",
    "MMTrainError",
    "MultiModalVAE",
    "PluginError",
    "Posterior",
    "__version__",
    "load",
]
