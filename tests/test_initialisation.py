"""Flax-style initialisation (LeCun normal, zero biases) against closed forms, and
`init: torch` leaving PyTorch's defaults untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from mmtrain import factory
from mmtrain.config import config_from_dict
from mmtrain.errors import ConfigError
from mmtrain.nets import MLP, TRUNCATED_NORMAL_STD, fan_in, initialise, lecun_normal_
from mmtrain.priors import MixturePrior
from mmtrain.registry import AGGREGATORS, MODALITIES


def test_truncated_normal_constant_is_the_std_of_the_truncated_draw() -> None:
    assert stats.truncnorm(-2, 2).std() == pytest.approx(TRUNCATED_NORMAL_STD, rel=1e-12)


def test_lecun_normal_on_a_wide_layer_matches_the_closed_form() -> None:
    """Variance 1 / fan_in, no entry beyond 2 / 0.8796… · sqrt(1 / fan_in), and the
    distribution of a scaled standard normal truncated to ±2 (Kolmogorov–Smirnov)."""
    layer = nn.Linear(1000, 2000)
    initialise(layer, "flax")
    w = layer.weight.detach().double().flatten()
    std = math.sqrt(1 / 1000) / TRUNCATED_NORMAL_STD
    assert w.var().item() == pytest.approx(1 / 1000, rel=0.01)  # 2M draws: s.e. ≈ 0.1 %
    assert abs(w.mean().item()) < 5 * math.sqrt(1 / 1000 / w.numel())
    bound = 2 * std
    assert w.abs().max().item() <= bound * (1 + 1e-6)
    assert w.abs().max().item() > 0.999 * bound  # the tails reach the truncation point
    sample = w[::20].numpy()
    assert stats.kstest(sample, stats.truncnorm(-2, 2, scale=std).cdf).pvalue > 1e-3
    assert stats.kstest(sample, stats.norm(scale=math.sqrt(1 / 1000)).cdf).pvalue < 1e-6
    assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


@pytest.mark.parametrize(
    "layer,expected",
    [
        (nn.Linear(7, 3), 7),
        (nn.Conv1d(6, 5, 3), 18),
        (nn.Conv2d(4, 8, 4, 2, 1), 64),
        (nn.Conv2d(4, 8, 3, groups=2), 18),
        # Flax's ConvTranspose rule: in_channels × kernel elements (PyTorch would use out).
        (nn.ConvTranspose2d(64, 8, 4, 2, 1), 1024),
        (nn.ConvTranspose1d(10, 3, 4), 40),
    ],
)
def test_fan_in_rules(layer: nn.Module, expected: int) -> None:
    assert fan_in(layer) == expected


def test_conv_and_transposed_conv_variances() -> None:
    torch.manual_seed(0)
    conv = initialise(nn.Conv2d(32, 256, 4), "flax")
    transposed = initialise(nn.ConvTranspose2d(256, 32, 4), "flax")
    for layer, fan in ((conv, 32 * 16), (transposed, 256 * 16)):
        w = layer.weight.detach().double()
        assert w.var().item() == pytest.approx(1 / fan, rel=0.02)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def _every_layer(module: nn.Module) -> list[nn.Module]:
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)
    return [m for m in module.modules() if isinstance(m, kinds)]


@pytest.mark.parametrize(
    "make",
    [
        lambda: MLP(20, 6, 64, 2),
        lambda: AGGREGATORS.get("sum_pooling")(8, 3, pooling_size=16, hidden_size=16),
        lambda: AGGREGATORS.get("self_attention_mixture")(
            8, 3, 2, hidden_size=16, pooling_size=16, attention_size=16, depth=2
        ),
        lambda: MODALITIES.get("image")(height=16, width=16, channels=1).build(8, 3),
        lambda: MODALITIES.get("text")(length=8).build(8, 3),
        lambda: MODALITIES.get("label")(num_classes=4).build(8, 3),
        lambda: MODALITIES.get("vector")(shape=(5,), decoder="mlp").build(8, 3),
    ],
    ids=["mlp", "sum_pooling", "self_attention", "image", "text", "label", "vector"],
)
def test_every_built_in_network_gets_lecun_weights_and_zero_biases(make) -> None:
    torch.manual_seed(0)
    module = initialise(make(), "flax")
    layers = _every_layer(module)
    assert layers
    for layer in layers:
        w = layer.weight.detach().double()
        limit = 2 / TRUNCATED_NORMAL_STD * math.sqrt(1 / fan_in(layer))
        assert w.abs().max().item() <= limit * (1 + 1e-6)
        if w.numel() >= 4000:
            assert w.var().item() == pytest.approx(1 / fan_in(layer), rel=0.1)
        if layer.bias is not None:
            assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    for norm in (m for m in module.modules() if isinstance(m, nn.LayerNorm)):
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))


def test_torch_scheme_leaves_pytorch_defaults_untouched() -> None:
    def make() -> nn.Module:
        torch.manual_seed(3)
        return AGGREGATORS.get("self_attention")(8, 3, hidden_size=16, pooling_size=16)

    reference = make().state_dict()
    kept = initialise(make(), "torch").state_dict()
    changed = initialise(make(), "flax").state_dict()
    assert all(torch.equal(kept[name], value) for name, value in reference.items())
    biases = [name for name in reference if name.endswith("bias") and "norm" not in name]
    assert biases and all(reference[name].abs().sum() > 0 for name in biases)
    assert all(torch.equal(changed[name], torch.zeros_like(changed[name])) for name in biases)


def test_modules_that_keep_their_initialisation_are_skipped() -> None:
    torch.manual_seed(0)
    outer = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4)))
    outer[1].keep_initialisation = True
    before = outer[1][0].bias.detach().clone()
    initialise(outer, "flax")
    assert torch.equal(outer[0].bias, torch.zeros(4))
    assert torch.equal(outer[1][0].bias, before)


def test_mixture_prior_table_follows_flax_embed() -> None:
    """Entries N(0, 1/(2d)) (Flax `Embed`), logits 1."""
    torch.manual_seed(0)
    prior = MixturePrior(latent_dim=25, num_components=2000)
    table = prior.table.detach().double()
    assert table.var().item() == pytest.approx(1 / 50, rel=0.02)
    assert (
        stats.kstest(table.flatten()[::10].numpy(), stats.norm(scale=math.sqrt(1 / 50)).cdf).pvalue
        > 1e-3
    )
    assert torch.equal(prior.prior_logits, torch.ones(2000))


def test_the_factory_applies_model_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """`model.init: torch` leaves PyTorch's layer defaults untouched; `flax` zeroes every
    bias (the self-attention aggregator's attention layers included)."""
    plugins = {
        "a": MODALITIES.get("vector")(shape=(5,)),
        "b": MODALITIES.get("label")(num_classes=3),
    }

    def built(init: str) -> dict[str, torch.Tensor]:
        config = config_from_dict(
            {
                "model": {
                    "aggregator": "self_attention",
                    "aggregator_width": 16,
                    "latent_dim": 3,
                    "feature_dim": 8,
                    "init": init,
                }
            }
        )
        torch.manual_seed(0)
        return factory.build_model(config.model, plugins).state_dict()

    flax, torch_default = built("flax"), built("torch")
    monkeypatch.setattr(factory, "initialise", lambda module, scheme: module)
    untouched = built("torch")
    assert all(torch.equal(torch_default[k], v) for k, v in untouched.items())
    bias_keys = [k for k in flax if k.endswith(".bias") and "norm" not in k]
    assert bias_keys and all(torch.equal(flax[k], torch.zeros_like(flax[k])) for k in bias_keys)
    assert any(torch_default[k].abs().sum() > 0 for k in bias_keys)
    with pytest.raises(ConfigError, match="model.init"):
        config_from_dict({"model": {"init": "jax"}})


def test_lecun_normal_rejects_bad_fan_in() -> None:
    with pytest.raises(ConfigError):
        lecun_normal_(torch.empty(3), 0)
    assert np.isfinite(lecun_normal_(torch.empty(3, 3), 3).numpy()).all()
