"""The MoPoE-recipe configs (configs/paper/mnist-svhn-text.yaml, polymnist.yaml) parse and
build, through the model factory and without their data, the published networks with the
recipe's settings."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from mmtrain.config import TrainConfig, load_config
from mmtrain.data.loader import build_plugins, resolve_modalities
from mmtrain.factory import build_model
from mmtrain.model import MultiModalVAE

pytestmark = pytest.mark.usefixtures("small_cpu_settings")

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"
LOG_075 = math.log(0.75)


class _NoSource:
    """Stands in for the data source: both configs map their modalities and labels
    themselves, so the source is never asked."""

    name = "none"

    def default_modalities(self) -> dict:
        raise AssertionError("the config should map its own modalities")

    def default_label_columns(self) -> tuple:
        raise AssertionError("the config should name its own label columns")


def model_of(name: str) -> tuple[TrainConfig, MultiModalVAE]:
    config = load_config(PAPER / f"{name}.yaml")
    modalities, labels = resolve_modalities(config.data, _NoSource())  # type: ignore[arg-type]
    assert labels == ("label",)
    torch.manual_seed(0)
    return config, build_model(config.model, build_plugins(modalities))


def weight_shapes(module: nn.Module) -> list[tuple[int, ...]]:
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)
    return [tuple(m.weight.shape) for m in module.modules() if isinstance(m, kinds)]


def assert_mopoe_laplace(modality: nn.Module) -> None:
    likelihood = modality.likelihood
    assert type(likelihood).__name__ == "LaplaceLikelihood"
    assert not likelihood.log_scale.requires_grad and likelihood.min_scale == 0.0
    scale = likelihood.split(torch.zeros(1, likelihood.event_size))[1]
    assert torch.allclose(scale, torch.full_like(scale, 0.75))


def test_mnist_svhn_text_builds_mopoes_networks() -> None:
    config, model = model_of("mnist-svhn-text")
    assert (config.model.aggregator, config.model.objective) == ("sum_pooling", "masked")
    assert (config.model.latent_dim, config.model.beta, config.optim.lr) == (20, 2.5, 1e-3)
    assert config.data.batch_size == 256 and config.train.epochs == 200
    d, f = 20, 40
    mnist, svhn, text = (model.modalities[n] for n in ("mnist", "svhn", "text"))
    assert model.modality_names == ["mnist", "svhn", "text"]
    assert weight_shapes(mnist.encoder) == [(400, 784), (f, 400)]
    assert weight_shapes(mnist.decoder) == [(400, d), (784, 400)]
    assert weight_shapes(svhn.encoder) == [
        (32, 3, 4, 4), (64, 32, 4, 4), (64, 64, 4, 4), (128, 64, 4, 4), (f, 128)
    ]  # fmt: skip
    # transposed convs store [in, out, k, k]
    assert weight_shapes(svhn.decoder) == [
        (128, d), (128, 64, 4, 4), (64, 64, 4, 4), (64, 32, 4, 4), (32, 3, 4, 4)
    ]  # fmt: skip
    symbols = text.event_shape[1]
    assert text.event_shape == (8, symbols)
    assert weight_shapes(text.encoder) == [
        (128, symbols, 1),
        (128, 128, 4),
        (128, 128, 4),
        (f, 128),
    ]
    assert weight_shapes(text.decoder) == [
        (128, d),
        (128, 128, 4),
        (128, 128, 4),
        (symbols, 128, 1),
    ]
    assert_mopoe_laplace(mnist)
    assert_mopoe_laplace(svhn)
    means = mnist.likelihood.mean(mnist.decode(torch.randn(3, d) * 10))
    assert means.min() > 0 and means.max() < 1  # MoPoE's sigmoid means
    # MoPoE's weights: SVHN's 3·32·32 values over each modality's (text: its 8 positions)
    expected = [3 * 32 * 32 / (28 * 28), 1.0, 3 * 32 * 32 / 8]
    assert torch.allclose(model.reconstruction_weights, torch.tensor(expected))


def test_polymnist_builds_mopoes_networks() -> None:
    config, model = model_of("polymnist")
    assert (config.model.aggregator, config.model.objective) == ("sum_pooling", "masked")
    assert (config.model.latent_dim, config.model.beta, config.optim.lr) == (512, 2.5, 5e-4)
    assert config.data.source == "polymnist" and config.data.batch_size == 256
    assert config.train.epochs == 300
    assert model.modality_names == [f"m{i}" for i in range(5)]
    d, f = 512, 1024
    for modality in model.modalities.values():
        assert modality.event_shape == (3, 28, 28)
        assert weight_shapes(modality.encoder) == [
            (32, 3, 3, 3), (64, 32, 3, 3), (128, 64, 3, 3), (512, 2048), (f, 512)
        ]  # fmt: skip
        assert weight_shapes(modality.decoder) == [
            (2048, d), (128, 64, 3, 3), (64, 32, 3, 3), (32, 3, 3, 3)
        ]  # fmt: skip
        assert_mopoe_laplace(modality)
    assert torch.equal(model.reconstruction_weights, torch.ones(5))
    assert model.modalities["m0"].encode(torch.rand(2, 3, 28, 28)).shape == (2, f)
    assert model.modalities["m4"].decode(torch.randn(3, 2, d)).shape == (3, 2, 3 * 28 * 28)
