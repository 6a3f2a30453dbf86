"""MoPoE's published networks as plugin options (`image.net`, `text.net`): shapes with sample
axes, parameter counts against a hand count of the published layer sizes, outputs against a
functional re-implementation of the published layer order, strides and paddings, option
validation, and the conformance kit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmtrain.errors import CheckpointError, ConfigError
from mmtrain.factory import check_compatible
from mmtrain.registry import MODALITIES
from mmtrain.testing import check_modality

pytestmark = pytest.mark.usefixtures("small_cpu_settings")

FEATURES, LATENT = 10, 4


def plugin(kind: str, **options: object):
    return MODALITIES.get(kind)(**options)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def conv(c_in: int, c_out: int, kernel: int, dims: int = 2) -> int:
    return c_in * c_out * kernel**dims + c_out


def layers(module: nn.Module) -> list[nn.Module]:
    """The Linear and (transposed) conv layers of `module`, in order."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)
    return [m for m in module.modules() if isinstance(m, kinds)]


# ---------------------------------------------------------------------------------------------
# the published sizes (MoPoE: mnistsvhntext/networks, mmnist/networks), counted by hand

SVHN_ENCODER = (
    conv(3, 32, 4) + conv(32, 64, 4) + conv(64, 64, 4) + conv(64, 128, 4) + dense(128, FEATURES)
)
# (plugin options, encoder parameters, decoder parameters) for F = 10, d = 4
PARAMETER_COUNTS = [
    (
        {"net": "mlp", "location": "sigmoid"},
        dense(784, 400) + dense(400, FEATURES),
        dense(LATENT, 400) + dense(400, 784),
    ),
    (
        {"net": "mlp", "dense_hidden": (64, 32), "channels": 3, "height": 8, "width": 8},
        dense(192, 64) + dense(64, 32) + dense(32, FEATURES),
        dense(LATENT, 32) + dense(32, 64) + dense(64, 192),
    ),
    (
        {"net": "mopoe-svhn", "channels": 3, "height": 32, "width": 32},
        SVHN_ENCODER,
        dense(LATENT, 128) + conv(128, 64, 4) + conv(64, 64, 4) + conv(64, 32, 4) + conv(32, 3, 4),
    ),
    (
        # network scales: the last transposed conv outputs 3 locations and 3 log-scales
        {"net": "mopoe-svhn", "channels": 3, "height": 32, "width": 32, "scale_mode": "network"},
        SVHN_ENCODER,
        dense(LATENT, 128) + conv(128, 64, 4) + conv(64, 64, 4) + conv(64, 32, 4) + conv(32, 6, 4),
    ),
    (
        {"net": "mopoe-polymnist", "channels": 3},
        conv(3, 32, 3)
        + conv(32, 64, 3)
        + conv(64, 128, 3)
        + dense(2048, 512)
        + dense(512, FEATURES),
        dense(LATENT, 2048) + conv(128, 64, 3) + conv(64, 32, 3) + conv(32, 3, 3),
    ),
]


@pytest.mark.parametrize("options,encoder,decoder", PARAMETER_COUNTS)
def test_image_parameter_counts(options: dict, encoder: int, decoder: int) -> None:
    modality = plugin("image", **options).build(FEATURES, LATENT)
    assert count(modality.encoder) == encoder
    assert count(modality.decoder) == decoder


def test_text_parameter_counts() -> None:
    text = plugin("text", net="mopoe")
    symbols = text.num_symbols
    modality = text.build(FEATURES, LATENT)
    width = 128  # MoPoE: 2 · dim, dim = 64
    assert count(modality.encoder) == (
        conv(symbols, width, 1, 1) + 2 * conv(width, width, 4, 1) + dense(width, FEATURES)
    )
    assert count(modality.decoder) == (
        dense(LATENT, width) + 2 * conv(width, width, 4, 1) + conv(width, symbols, 1, 1)
    )


# ---------------------------------------------------------------------------------------------
# outputs against the published layer order, strides and paddings, written out functionally


def svhn_reference(encoder: list[nn.Module], decoder: list[nn.Module], x: Tensor, z: Tensor):
    h = x
    for layer, (stride, padding) in zip(encoder[:4], [(2, 1), (2, 1), (2, 1), (2, 0)]):
        h = F.relu(F.conv2d(h, layer.weight, layer.bias, stride, padding))
    h = F.linear(h.flatten(1), encoder[4].weight, encoder[4].bias)
    y = F.linear(z, decoder[0].weight, decoder[0].bias)[..., None, None]
    for index, (stride, padding) in enumerate([(1, 0), (2, 1), (2, 1), (2, 1)]):
        layer = decoder[index + 1]
        y = F.conv_transpose2d(F.relu(y), layer.weight, layer.bias, stride, padding)
    return h, y


def polymnist_reference(encoder: list[nn.Module], decoder: list[nn.Module], x: Tensor, z: Tensor):
    h = x
    for layer in encoder[:3]:
        h = F.relu(F.conv2d(h, layer.weight, layer.bias, 2, 1))
    h = F.relu(F.linear(h.flatten(1), encoder[3].weight, encoder[3].bias))
    h = F.linear(h, encoder[4].weight, encoder[4].bias)
    y = F.relu(F.linear(z, decoder[0].weight, decoder[0].bias)).reshape(-1, 128, 4, 4)
    for index, output_padding in enumerate([0, 1, 1]):
        layer = decoder[index + 1]
        y = y if index == 0 else F.relu(y)
        y = F.conv_transpose2d(y, layer.weight, layer.bias, 2, 1, output_padding)
    return h, y


def text_reference(encoder: list[nn.Module], decoder: list[nn.Module], x: Tensor, z: Tensor):
    h = x.transpose(1, 2)
    for layer, (stride, padding) in zip(encoder[:3], [(1, 0), (2, 1), (2, 0)]):
        h = F.relu(F.conv1d(h, layer.weight, layer.bias, stride, padding))
    h = F.linear(h.flatten(1), encoder[3].weight, encoder[3].bias)
    y = F.linear(z, decoder[0].weight, decoder[0].bias)[..., None]
    for layer, (stride, padding) in zip(decoder[1:3], [(1, 0), (2, 1)]):
        y = F.relu(F.conv_transpose1d(y, layer.weight, layer.bias, stride, padding))
    y = F.conv1d(y, decoder[3].weight, decoder[3].bias)
    return h, y.transpose(1, 2)


@pytest.mark.parametrize(
    "kind,options,reference",
    [
        ("image", {"net": "mopoe-svhn", "channels": 3, "height": 32, "width": 32}, svhn_reference),
        ("image", {"net": "mopoe-polymnist", "channels": 3}, polymnist_reference),
        ("text", {"net": "mopoe"}, text_reference),
    ],
)
def test_outputs_match_the_published_layers(kind: str, options: dict, reference) -> None:
    torch.manual_seed(0)
    built = plugin(kind, **options)
    modality = built.build(FEATURES, LATENT)
    if kind == "text":
        x = nn.functional.one_hot(torch.randint(0, built.num_symbols, (3, 8)), built.num_symbols)
        x = x.float()
    else:
        x = torch.rand(3, *built.event_shape)
    z = torch.randn(3, LATENT)
    h, y = reference(layers(modality.encoder), layers(modality.decoder), x, z)
    assert torch.allclose(modality.encode(x), h, atol=1e-5)
    assert y.shape[1:] == ((8, built.num_symbols) if kind == "text" else built.event_shape)
    assert torch.allclose(modality.decode(z), y.reshape(3, -1), atol=1e-5)


def test_mlp_matches_mopoe_mnist_with_sigmoid_means() -> None:
    torch.manual_seed(0)
    modality = plugin("image", net="mlp", location="sigmoid").build(FEATURES, LATENT)
    enc, dec = layers(modality.encoder), layers(modality.decoder)
    x, z = torch.rand(3, 1, 28, 28), torch.randn(3, LATENT)
    hidden = F.relu(F.linear(x.reshape(3, 784), enc[0].weight, enc[0].bias))
    assert torch.allclose(modality.encode(x), F.linear(hidden, enc[1].weight, enc[1].bias))
    means = torch.sigmoid(
        F.linear(F.relu(F.linear(z, dec[0].weight, dec[0].bias)), dec[1].weight, dec[1].bias)
    )
    params = modality.decode(z)
    assert torch.allclose(params, means, atol=1e-6)
    assert torch.allclose(modality.likelihood.mean(params), means.reshape(3, 1, 28, 28))
    assert float(modality.likelihood.split(params)[1][0, 0]) == pytest.approx(0.75 + 5e-4)


def test_sigmoid_location_leaves_network_log_scales_alone() -> None:
    torch.manual_seed(0)
    options = {"channels": 3, "height": 32, "width": 32, "net": "mopoe-svhn"}
    squashed = plugin("image", location="sigmoid", scale_mode="network", **options)
    plain = plugin("image", scale_mode="network", **options)
    torch.manual_seed(1)
    a = squashed.build(FEATURES, LATENT)
    torch.manual_seed(1)
    b = plain.build(FEATURES, LATENT)
    z = torch.randn(2, 5, LATENT)
    size = 3 * 32 * 32
    pa, pb = a.decode(z), b.decode(z)
    assert torch.allclose(pa[..., :size], torch.sigmoid(pb[..., :size]))
    assert torch.equal(pa[..., size:], pb[..., size:])


# ---------------------------------------------------------------------------------------------
# shapes with sample axes


@pytest.mark.parametrize(
    "kind,options",
    [
        ("image", {"net": "mlp"}),
        ("image", {"net": "mlp", "channels": 3, "height": 13, "width": 9, "likelihood": "normal"}),
        ("image", {"net": "mlp", "likelihood": "bernoulli"}),
        ("image", {"net": "mopoe-svhn", "channels": 3, "height": 32, "width": 32}),
        ("image", {"net": "mopoe-svhn", "channels": 1, "height": 32, "width": 32}),
        ("image", {"net": "mopoe-polymnist", "channels": 3, "scale_mode": "network"}),
        ("image", {"net": "mopoe-polymnist", "channels": 1, "likelihood": "bernoulli"}),
        ("text", {"net": "mopoe", "unknown": "map"}),
    ],
)
def test_shapes_with_sample_axes(kind: str, options: dict) -> None:
    built = plugin(kind, **options)
    modality = built.build(FEATURES, LATENT)
    x = torch.stack([built.decode_cell("seven")] * 2) if kind == "text" else None
    x = torch.rand(2, *built.event_shape) if x is None else x
    assert modality.encode(x).shape == (2, FEATURES)
    num_params = modality.likelihood.num_params
    assert modality.decode(torch.randn(2, LATENT)).shape == (2, num_params)
    params = modality.decode(torch.randn(5, 3, 2, LATENT))
    assert params.shape == (5, 3, 2, num_params)
    assert modality.log_prob(params, x).shape == (5, 3, 2)
    assert modality.likelihood.mean(params).shape == (5, 3, 2, *built.event_shape)


# ---------------------------------------------------------------------------------------------
# options


def test_defaults_are_unchanged() -> None:
    assert plugin("image").net == "conv" and plugin("image").location == "identity"
    assert plugin("text").net == "conv"
    default = plugin("image").build(FEATURES, LATENT)
    assert [c.out_channels for c in layers(default.encoder)[:-1]] == [32, 64]


def test_bad_combinations_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="'mopoe-svhn' is built for 32×32 images, got 28×28"):
        plugin("image", net="mopoe-svhn", channels=3)
    with pytest.raises(ConfigError, match="'mopoe-polymnist' is built for 28×28"):
        plugin("image", net="mopoe-polymnist", height=32, width=32)
    with pytest.raises(ConfigError, match="location='sigmoid' is for laplace/normal"):
        plugin("image", net="mlp", location="sigmoid", likelihood="bernoulli")
    with pytest.raises(ConfigError, match="'dense_hidden' needs at least one positive width"):
        plugin("image", net="mlp", dense_hidden=[])
    with pytest.raises(ConfigError, match="must be one of 'conv', 'mlp', 'mopoe-svhn'"):
        plugin("image", net="resnet")
    with pytest.raises(ConfigError, match="text net 'mopoe' is built for length 8, got 5"):
        plugin("text", net="mopoe", length=5)


# ---------------------------------------------------------------------------------------------
# the conformance kit


def pixel_arrays(shape: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """A float and an integer array cell of one shape."""
    rng = np.random.default_rng(seed)
    return [rng.random(shape), (rng.random(shape) * 255).astype(np.uint8)]


CONFORMANCE = [
    (
        "image",
        {"net": "mlp", "location": "sigmoid", "dense_hidden": (16,)},
        pixel_arrays((28, 28), 0),
        [np.zeros((32, 32)), "x"],
    ),
    (
        "image",
        {"net": "mlp", "height": 2, "width": 2, "likelihood": "bernoulli", "dense_hidden": (4,)},
        pixel_arrays((2, 2), 1),
        [np.zeros((3, 3))],
    ),
    (
        "image",
        {"net": "mopoe-svhn", "channels": 3, "height": 32, "width": 32, "scale_mode": "network"},
        pixel_arrays((32, 32, 3), 2),
        [np.zeros((32, 32))],
    ),
    (
        "image",
        {"net": "mopoe-polymnist", "channels": 3, "dense_hidden": (8,)},
        pixel_arrays((28, 28, 3), 3),
        [np.zeros((28, 28))],
    ),
    ("text", {"net": "mopoe", "hidden_channels": (16,)}, ["seven", "two"], ["far too long", 7]),
]


@pytest.mark.parametrize(
    "kind,options,good,bad",
    CONFORMANCE,
    ids=[f"{c[0]}-{c[1]['net']}-{i}" for i, c in enumerate(CONFORMANCE)],
)
def test_conformance(kind: str, options: dict, good: list, bad: list) -> None:
    report = check_modality(plugin(kind, **options), good, bad)
    for check in ("options", "encoder", "decoder", "log_prob", "gradients"):
        assert check in report.passed
    assert "safetensors round trip" in report.passed
    if kind == "text" or options.get("likelihood") == "bernoulli":
        assert "normalisation" in report.passed


def test_checkpoints_from_before_the_options_still_resume(tmp_path: Path) -> None:
    """A signature saved before `net`, `dense_hidden`, `location` existed equals the default
    model's; one saved with another net does not."""
    current = {"modalities": {"a": {"kind": "image", "options": plugin("image").options()}}}
    old_options = {
        k: v
        for k, v in plugin("image").options().items()
        if k not in ("net", "dense_hidden", "location")
    }
    check_compatible(
        {"modalities": {"a": {"kind": "image", "options": old_options}}}, current, tmp_path
    )
    other = {**old_options, "net": "mlp"}
    with pytest.raises(CheckpointError, match="written for another model"):
        check_compatible(
            {"modalities": {"a": {"kind": "image", "options": other}}}, current, tmp_path
        )
