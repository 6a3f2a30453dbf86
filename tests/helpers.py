"""Small models and batches shared by tests."""

from __future__ import annotations

from pathlib import Path

import torch

from mmtrain.batch import Batch
from mmtrain.config import TrainConfig, load_config
from mmtrain.model import MultiModalVAE
from mmtrain.priors import build_prior
from mmtrain.registry import AGGREGATORS, MODALITIES

LATENT = 3


def build_small_model(
    aggregator: str = "sum_pooling",
    num_modalities: int = 3,
    num_components: int = 1,
    dtype: torch.dtype = torch.float32,
    family: str = "normal",
) -> MultiModalVAE:
    torch.manual_seed(0)
    cls = AGGREGATORS.get(aggregator)
    feature_dim = cls.required_feature_dim(LATENT) or 8
    options = {}
    if aggregator.startswith(("sum_pooling", "self_attention")):
        options = {"pooling_size": 8, "hidden_size": 8}
    if aggregator.startswith("self_attention"):
        options["attention_size"] = 8
        options["num_heads"] = 2
    agg = cls(feature_dim, LATENT, num_components, family, 1e-3, **options)
    modalities = {
        f"m{i}": MODALITIES.get("vector")(
            shape=(2 + i,), encoder_hidden=(8,), decoder="linear"
        ).build(feature_dim, LATENT)
        for i in range(num_modalities)
    }
    prior = build_prior(LATENT, num_components, family)
    return MultiModalVAE(modalities, agg, prior).to(dtype)


def random_batch(model: MultiModalVAE, size: int, seed: int = 0, avail_prob: float = 0.7) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    x = {
        name: torch.randn(size, *model.modalities[name].event_shape, generator=gen, dtype=dtype)
        for name in model.modality_names
    }
    avail = torch.rand(size, model.num_modalities, generator=gen) < avail_prob
    avail[0] = True
    return Batch(x, avail)


#: a training config small enough for tests of the loop and of config loading
TINY_TRAIN_CONFIG = """
data: {source: ivae-bimodal, batch_size: 250}
model: {aggregator: sum_pooling, latent_dim: 2, feature_dim: 32,
        aggregator_options: {pooling_size: 32, hidden_size: 32}}
train: {steps: 12, log_every: 4, checkpoint_every: 4, keep_last: 10}
"""


def tiny_config(tmp_path: Path, *overrides: str) -> TrainConfig:
    """`TINY_TRAIN_CONFIG` written under `tmp_path` and loaded with `overrides`, training into
    `tmp_path / "run"`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_TRAIN_CONFIG)
    return load_config(path, [f"output_dir={tmp_path / 'run'}", *overrides])


#: `mmtrain eval` flags that keep an evaluation of a tiny run to seconds
FAST_EVAL = [
    "--is-samples", "4", "--max-examples", "300", "--max-train-examples", "600",
    "--classifier-epochs", "1", "--joint-samples", "100", "--probe-examples", "100",
]  # fmt: skip
