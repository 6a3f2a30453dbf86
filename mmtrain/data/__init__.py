"""Multi-modal data: stream rows with Hugging Face `datasets`, decode cells with the modality
plugins, and batch them with an availability mask.

    config = DataConfig.from_dict(yaml_config["data"])
    loader = build_loader(config, rank, world_size)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:          # mmtrain.batch.Batch
            ...
        log(loader.metrics())
"""

from mmtrain.data.config import DataConfig, ModalitySpec
from mmtrain.data.embedded import (
    EmbeddedDataset,
    embedded_names,
    ensure_embedded,
    make_embedded,
    mmtrain_home,
)
from mmtrain.data.loader import (
    BatchLoader,
    EpochStats,
    build_loader,
    build_plugins,
    resolve_modalities,
)
from mmtrain.data.sources import Source, resolve_source

__all__ = [
    "BatchLoader",
    "DataConfig",
    "EmbeddedDataset",
    "EpochStats",
    "ModalitySpec",
    "Source",
    "build_loader",
    "build_plugins",
    "embedded_names",
    "ensure_embedded",
    "make_embedded",
    "mmtrain_home",
    "resolve_modalities",
    "resolve_source",
]
