"""The built-in modality plugins: cell decoding (good cells and the errors for bad ones),
network shapes for every supported size, previews, options, and the simulated experiments'
architectures (docs/math.md §4.1–4.3) built through the vector plugin."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mmtrain.errors import ConfigError, DataError
from mmtrain.modality import Modality, create_modality
from mmtrain.registry import MODALITIES

pytestmark = pytest.mark.usefixtures("small_cpu_settings")


def plugin(kind: str, **options: object):
    return MODALITIES.get(kind)(**options)


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# options


def test_options_are_type_checked_with_readable_errors() -> None:
    with pytest.raises(ConfigError, match="image option 'height' must be an integer, got '28'"):
        plugin("image", height="28")
    with pytest.raises(
        ConfigError,
        match="image option 'likelihood' must be one of .*, got 'laplce'; did you mean 'laplace'",
    ):
        plugin("image", likelihood="laplce")
    with pytest.raises(ConfigError, match="unknown option 'hieght' .*did you mean 'height'"):
        create_modality("image", {"hieght": 32})
    assert plugin("image", hidden_channels=[8, 16]).hidden_channels == (8, 16)
    assert plugin("vector", init_log_scale=0).init_log_scale == 0.0


@pytest.mark.parametrize("kind", ["vector", "image", "text"])
def test_options_rebuild_the_plugin(kind: str) -> None:
    first = plugin(kind)
    again = create_modality(kind, first.options())
    assert again == first and again.options() == first.options()


def test_built_modality_remembers_its_plugin() -> None:
    text = plugin("text", hidden_channels=(8,))
    modality = text.build(4, 2)
    assert isinstance(modality, Modality)
    assert modality.kind == "text" and modality.plugin is text


# ---------------------------------------------------------------------------------------------
# vector


def test_vector_cells() -> None:
    vector = plugin("vector", shape=(2, 2))
    assert torch.equal(vector.decode_cell([[1, 2], [3, 4]]), torch.tensor([[1.0, 2], [3, 4]]))
    assert vector.decode_cell(np.arange(4)).shape == (2, 2)
    assert vector.decode_cell(torch.ones(4)).dtype == torch.float32
    with pytest.raises(
        DataError, match=r"vector cell: expected 4 values \(shape \[2, 2\]\), got 3"
    ):
        vector.decode_cell([1, 2, 3])
    with pytest.raises(DataError, match="1 values are NaN or infinite"):
        vector.decode_cell([1, 2, 3, float("inf")])
    with pytest.raises(DataError, match="expected a list or array of numbers, got 'abcd'"):
        vector.decode_cell("abcd")
    with pytest.raises(DataError, match="expected numbers"):
        vector.decode_cell([1, "a", 3, 4])
    categorical = plugin("vector", shape=(1, 3), likelihood="categorical")
    with pytest.raises(DataError, match="one-hot rows"):
        categorical.decode_cell([[1, 1, 0]])
    with pytest.raises(ConfigError, match="shape \\[variables, classes\\]"):
        plugin("vector", shape=(3,), likelihood="categorical")


def test_vector_preview() -> None:
    vector = plugin("vector", shape=(20,))
    assert vector.preview(torch.arange(20.0)).startswith("[0, 1, 2,")
    assert vector.preview(torch.arange(20.0)).endswith(", …]")
    assert vector.preview(torch.zeros(3, 20)).count("\n") == 2


def test_experiment_architectures_are_unchanged() -> None:
    """The paper's configs (configs/paper/*.yaml) build the scripts' networks."""
    from mmtrain.data.loader import build_loader
    from mmtrain.factory import build_model
    from mmtrain.likelihoods import CategoricalLikelihood
    from mmtrain.nets import MLP
    from mmtrain.paper import ExperimentOptions, experiment_config

    def model_for(name: str):
        small = ["data.options.condition_samples=200"] if name == "ivae-multimodal" else []
        config = experiment_config(name, ExperimentOptions(num_examples=300), small)
        return build_model(config.model, build_loader(config.data).plugins)

    linear = model_for("linear-gaussian")
    for modality in linear.modalities.values():
        assert type(modality.decoder) is nn.Linear
        assert not modality.likelihood.log_scale.requires_grad
        assert torch.all(modality.likelihood.log_scale == 0)
        assert modality.encoder.mlp.hidden[0].out_features == 256
    bimodal = model_for("ivae-bimodal")
    u, x = bimodal.modalities["u"], bimodal.modalities["x"]
    assert isinstance(u.likelihood, CategoricalLikelihood) and u.event_shape == (1, 5)
    assert isinstance(u.decoder, MLP) and u.decoder.act_name == "leaky_relu_0.1"
    assert u.decoder.hidden[0].out_features == 5
    assert torch.allclose(x.likelihood.log_scale, torch.tensor(math.log(0.1)))
    assert not x.likelihood.log_scale.requires_grad
    assert x.encoder.mlp.hidden[0].out_features == 128
    multimodal = model_for("ivae-multimodal")
    for modality in multimodal.modalities.values():
        assert modality.likelihood.log_scale.requires_grad
        assert modality.likelihood.min_scale == 5e-4
        assert modality.decoder.hidden[0].out_features == 25


# ---------------------------------------------------------------------------------------------
# image


@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (32, 3), (64, 3), (13, 1)])
@pytest.mark.parametrize("likelihood", ["bernoulli", "laplace", "normal"])
def test_image_networks_for_every_size(size: int, channels: int, likelihood: str) -> None:
    image = plugin(
        "image",
        channels=channels,
        height=size,
        width=size,
        likelihood=likelihood,
        scale_mode="network" if likelihood == "normal" else "fixed",
        hidden_channels=(4, 4, 8, 8),
    )
    modality = image.build(10, 3)
    x = torch.rand(2, channels, size, size)
    assert modality.encode(x).shape == (2, 10)
    params = modality.decode(torch.randn(4, 2, 3))
    assert params.shape == (4, 2, modality.likelihood.num_params)
    assert modality.log_prob(params, x).shape == (4, 2)
    assert modality.likelihood.mean(params).shape == (4, 2, channels, size, size)


def test_image_non_square_and_default_widths() -> None:
    image = plugin("image", channels=3, height=32, width=48)
    modality = image.build(16, 4)
    assert modality.encode(torch.rand(2, 3, 32, 48)).shape == (2, 16)
    assert modality.decode(torch.randn(2, 4)).shape == (2, 3 * 32 * 48)
    convs = [m for m in modality.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 64]  # 32×48 → 16×24 → 8×12 → 4×6


def test_image_fixed_scale_is_mopoe() -> None:
    likelihood = plugin("image").build(4, 2).likelihood
    assert float(likelihood.split(torch.zeros(1, 784))[1][0, 0]) == pytest.approx(0.75, abs=1e-3)


def test_image_cells_from_every_source(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    expected = torch.from_numpy(pixels.astype(np.float32) / 255)[None]
    gray = plugin("image")
    pil = Image.fromarray(pixels)
    path = tmp_path / "digit.png"
    pil.save(path)
    for cell in (
        pixels,
        pixels.tolist(),
        torch.from_numpy(pixels),
        pixels.astype(np.float64) / 255,
        pil,
        encoded(pil),
        bytearray(encoded(pil)),
        {"bytes": encoded(pil), "path": None},
        {"bytes": None, "path": str(path)},
    ):
        assert torch.allclose(gray.decode_cell(cell), expected, atol=1e-6), type(cell)
    rgb = plugin("image", channels=3, height=4, width=6)
    hwc = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    assert torch.equal(rgb.decode_cell(hwc), rgb.decode_cell(hwc.transpose(2, 0, 1)))
    assert rgb.decode_cell(Image.fromarray(hwc)).shape == (3, 4, 6)
    jpeg = rgb.decode_cell(encoded(Image.fromarray(hwc), "JPEG"))
    assert jpeg.shape == (3, 4, 6) and 0 <= float(jpeg.min()) <= float(jpeg.max()) <= 1
    assert gray.decode_cell(Image.fromarray(hwc).resize((28, 28))).shape == (1, 28, 28)


def test_image_cells_from_a_hugging_face_image_column() -> None:
    import datasets

    pil = Image.fromarray(np.full((28, 28), 200, dtype=np.uint8))
    features = datasets.Features({"image": datasets.Image()})
    table = datasets.Dataset.from_dict({"image": [pil]}, features=features)
    image = plugin("image")
    assert torch.allclose(image.decode_cell(table[0]["image"]), torch.full((1, 28, 28), 200 / 255))
    raw = table.cast_column("image", datasets.Image(decode=False))[0]["image"]
    assert isinstance(raw, dict) and torch.allclose(
        image.decode_cell(raw), torch.full((1, 28, 28), 200 / 255)
    )


@pytest.mark.parametrize(
    "cell,message",
    [
        (np.zeros((32, 32)), r"expected a 28×28 image, got 32×32; set resize=true"),
        (np.full((28, 28), 1.5), r"float pixels must lie in \[0, 1\], got 1.5..1.5"),
        (np.full((28, 28), 300), r"integer pixels must lie in 0..255"),
        (np.full((28, 28), np.nan), "NaN"),
        (np.zeros((28, 28, 3)), r"expected an array of shape \(1, 28, 28\)"),
        (b"\x89PNG broken", r"cannot decode image bytes \(11 bytes\): not an image format"),
        ({"bytes": None, "path": None}, "neither bytes nor path"),
        ({"bytes": None, "path": "/nonexistent/x.png"}, "cannot read /nonexistent/x.png"),
        ("digit.png", "expected a PIL image, an array, encoded image bytes"),
        (None, "got None"),
        (np.zeros((2, 28, 28, 1)), "expected an H×W or 3-D array"),
        (np.array([["a"]]), "dtype <U1"),
    ],
)
def test_image_bad_cells_name_the_problem(cell: object, message: str) -> None:
    with pytest.raises(DataError, match=f"^image cell: .*{message}"):
        plugin("image").decode_cell(cell)


def test_image_resize_option() -> None:
    image = plugin("image", resize=True)
    big = np.zeros((56, 56), dtype=np.uint8)
    big[:28] = 255
    x = image.decode_cell(big)
    assert x.shape == (1, 28, 28)
    assert float(x[0, :13].mean()) == pytest.approx(1.0) and float(x[0, 15:].mean()) == 0


def test_image_preview() -> None:
    image = plugin("image", channels=3, height=8, width=8)
    single = image.preview(torch.rand(3, 8, 8))
    assert isinstance(single, Image.Image) and single.mode == "RGB"
    assert single.size == (64, 64)  # small images are enlarged for people
    grid = image.preview(torch.rand(5, 3, 8, 8) * 3 - 1)  # out-of-range means are clamped
    assert grid.size == (8 * (3 * 9 - 1), 8 * (2 * 9 - 1))
    two = plugin("image", channels=2, height=32, width=32).preview(torch.rand(2, 32, 32))
    assert two.mode == "L" and two.size == (128, 64)


# ---------------------------------------------------------------------------------------------
# text


def test_text_cells() -> None:
    text = plugin("text", length=6)
    x = text.decode_cell("Seven")
    assert x.shape == (6, len(text.alphabet)) and torch.all(x.sum(-1) == 1)
    assert text.to_text(x) == "seven"
    assert text.preview(x) == "seven "
    assert text.to_text(text.decode_cell(b"two")) == "two"
    with pytest.raises(DataError, match=r"'ü' at 1, '\$' at 4; extend the alphabet"):
        text.decode_cell("Güte$")
    with pytest.raises(DataError, match="has 8 characters, more than length 6; set too_long"):
        text.decode_cell("eighteen")
    with pytest.raises(DataError, match="text cell: expected a string, got 7"):
        text.decode_cell(7)
    with pytest.raises(DataError, match="not UTF-8"):
        text.decode_cell(b"\xff")


def test_text_unknown_symbol_and_truncation() -> None:
    text = plugin("text", length=4, unknown="map", too_long="truncate", lowercase=False)
    assert text.event_shape == (4, len(text.alphabet) + 1)
    x = text.decode_cell("aÜbcdef")
    assert text.to_text(x) == "a\ufffdbc"
    assert text.preview(torch.stack([x, x])) == "a\ufffdbc\na\ufffdbc"


def test_text_alphabet_validation() -> None:
    with pytest.raises(ConfigError, match="repeats characters: 'a'"):
        plugin("text", alphabet="aab ")
    with pytest.raises(ConfigError, match="'pad' must be one character of the alphabet"):
        plugin("text", alphabet="ab")
    with pytest.raises(ConfigError, match="upper-case letters"):
        plugin("text", alphabet="aB ")
    assert plugin("text", alphabet="aB ", lowercase=False).event_shape == (8, 3)


@pytest.mark.parametrize("length", [1, 5, 8, 16, 71])
def test_text_networks_for_any_length(length: int) -> None:
    text = plugin("text", length=length, hidden_channels=(8, 8, 8))
    modality = text.build(6, 3)
    x = torch.stack([text.decode_cell("a")] * 2)
    assert modality.encode(x).shape == (2, 6)
    params = modality.decode(torch.randn(3, 2, 3))
    assert params.shape == (3, 2, length * len(text.alphabet))
    probs = modality.likelihood.mean(params)
    assert torch.allclose(probs.sum(-1), torch.ones(3, 2, length))


# ---------------------------------------------------------------------------------------------
# label


def test_label_cells() -> None:
    digits = plugin("label", num_classes=10)
    assert digits.event_shape == (1, 10)
    assert int(digits.decode_cell(7).argmax()) == 7
    assert int(digits.decode_cell(np.int64(3)).argmax()) == 3
    assert int(digits.decode_cell(2.0).argmax()) == 2
    assert int(digits.decode_cell("4").argmax()) == 4
    named = plugin("label", class_names=["zero", "one", "two"])
    assert named.num_classes == 3 and int(named.decode_cell("two").argmax()) == 2
    for cell, message in [
        (10, r"class index 10 is outside 0..9"),
        (-1, "outside"),
        (2.5, "whole number"),
        (True, "expected a class index or name, got True"),
        (None, "got None"),
        ("seven", "has no class_names"),
    ]:
        with pytest.raises(DataError, match=f"^label cell: .*{message}"):
            digits.decode_cell(cell)
    with pytest.raises(DataError, match="unknown class name 'tow'; did you mean 'two'"):
        named.decode_cell("tow")


def test_label_options() -> None:
    with pytest.raises(ConfigError, match="num_classes >= 2 or class_names"):
        plugin("label")
    with pytest.raises(ConfigError, match="num_classes is 3 but class_names has 2"):
        plugin("label", num_classes=3, class_names=["a", "b"])
    with pytest.raises(ConfigError, match="repeat a name"):
        plugin("label", class_names=["a", "a"])


def test_label_preview() -> None:
    named = plugin("label", class_names=["cat", "dog"])
    assert named.preview(named.decode_cell("dog")) == "dog"
    assert named.preview(torch.tensor([[0.25, 0.75]])) == "dog (p=0.75)"
    assert plugin("label", num_classes=3).preview(torch.eye(3)[:, None]) == "0\n1\n2"
