"""mmtrain: multi-modal VAEs with permutation-invariant aggregators and masked objectives."""

from mmtrain.errors import CheckpointError, ConfigError, DataError, MMTrainError, PluginError
from mmtrain.model import Batch, MultiModalVAE

__version__ = "0.1.0"


def load(path: str, device: str = "cpu") -> MultiModalVAE:
    """Rebuild a trained model from an inference bundle or checkpoint (`mmtrain.bundle`)."""
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
