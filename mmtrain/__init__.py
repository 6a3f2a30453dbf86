"""mmtrain: multi-modal VAEs with permutation-invariant aggregators and masked objectives."""

from mmtrain.errors import CheckpointError, ConfigError, DataError, MMTrainError, PluginError
from mmtrain.model import Batch, MultiModalVAE

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MMTrainError",
    "MultiModalVAE",
    "PluginError",
    "__version__",
]
