"""The conformance kit: every built-in plugin passes it, and deliberately broken plugins
fail it with a message that names the broken check."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from mmtrain.aggregation import Aggregator
from mmtrain.errors import DataError
from mmtrain.likelihoods import Likelihood, NormalLikelihood
from mmtrain.modality import ModalityPlugin, option
from mmtrain.priors import Prior
from mmtrain.registry import MODALITIES
from mmtrain.testing import check_aggregator, check_modality, isolated_registry

pytestmark = pytest.mark.usefixtures("small_cpu_settings")


SMALL = {"pooling_size": 8, "hidden_size": 8}
ATTENTION = {**SMALL, "attention_size": 8, "num_heads": 2}
AGGREGATOR_CASES = [
    ("poe", 1, {}),
    ("moe", 1, {}),
    ("moe", 3, {}),
    ("sum_pooling", 1, SMALL),
    ("sum_pooling_mixture", 3, SMALL),
    ("self_attention", 1, ATTENTION),
    ("self_attention", 1, {**ATTENTION, "depth": 2}),
    ("self_attention_mixture", 3, ATTENTION),
]


@pytest.mark.parametrize("name,components,options", AGGREGATOR_CASES)
def test_builtin_aggregators_pass(name: str, components: int, options: dict) -> None:
    report = check_aggregator(name, num_components=components, **options)
    for check in ("permutation invariance", "blind to masked rows", "empty set", "gradients"):
        assert check in report.passed
    assert {"float32", "bfloat16", "safetensors round trip"} <= set(report.passed)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


PIXELS = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
TINY_CONV = (4, 8)


def _modality_cases() -> list[tuple[str, dict, list, list]]:
    vector_small = {"encoder_hidden": (8,), "decoder_hidden": (8,)}
    return [
        ("vector", {"shape": (1,), **vector_small}, [[0.5], np.array([2.0])], ["x", [1, 2]]),
        (
            "vector",
            {"shape": (1,), "likelihood": "laplace", "scale_mode": "learned", **vector_small},
            [[0.5]],
            [[float("nan")]],
        ),
        (
            "vector",
            {"shape": (1,), "scale_mode": "network", **vector_small},
            [[-1.0]],
            [None],
        ),
        ("vector", {"shape": (6,), "decoder": "linear", **vector_small}, [[0.0] * 6], [[0.0] * 5]),
        (
            "vector",
            {"shape": (1, 5), "likelihood": "categorical", "decoder": "injective", **vector_small},
            [[[0, 0, 1, 0, 0]]],
            [[[0, 0.5, 0.5, 0, 0]]],
        ),
        (
            "vector",
            {"shape": (3,), "likelihood": "bernoulli", **vector_small},
            [[0, 1, 1]],
            [[0, 2, 1]],
        ),
        (
            "image",
            {"height": 8, "width": 8, "likelihood": "bernoulli", "hidden_channels": TINY_CONV},
            [PIXELS, Image.fromarray(PIXELS), _png(PIXELS), {"bytes": _png(PIXELS), "path": None}],
            [b"not an image", np.zeros((9, 9)), PIXELS * 2.0, "x.png", np.zeros((8, 8, 3))],
        ),
        (
            "image",
            {"height": 28, "width": 28, "hidden_channels": TINY_CONV},
            [np.random.default_rng(1).random((28, 28))],
            [np.zeros((32, 32))],
        ),
        (
            "image",
            {"channels": 3, "height": 32, "width": 32, "scale_mode": "network"}
            | {"hidden_channels": (4, 4, 8)},
            [np.random.default_rng(2).random((32, 32, 3))],
            [np.zeros((32, 32))],
        ),
        (
            "image",
            {"height": 64, "width": 64, "likelihood": "normal", "hidden_channels": (4, 4, 4, 8)},
            [np.random.default_rng(3).random((64, 64))],
            [np.zeros((28, 28))],
        ),
        (
            "text",
            {"hidden_channels": (16, 16)},
            ["seven", "", "Three 3"],
            ["über", "far too long", 7, None],
        ),
        (
            "text",
            {"hidden_channels": (16,), "unknown": "map", "too_long": "truncate", "length": 5},
            ["über", "far too long"],
            [b"\xff"],
        ),
        (
            "label",
            {"num_classes": 10, "hidden": (8,)},
            [3, 0, 9, np.int64(4), 2.0],
            [10, -1, 2.5, "x", True, None],
        ),
        ("label", {"class_names": ("cat", "dog"), "hidden": (8,)}, ["cat", 1], ["cow", 2]),
    ]


@pytest.mark.parametrize(
    "kind,options,good,bad",
    _modality_cases(),
    ids=[f"{case[0]}-{i}" for i, case in enumerate(_modality_cases())],
)
def test_builtin_modalities_pass(kind: str, options: dict, good: list, bad: list) -> None:
    plugin = MODALITIES.get(kind)(**options)
    report = check_modality(plugin, good, bad)
    for check in ("decode good cells", "decode bad cells", "decoder", "log_prob", "preview"):
        assert check in report.passed
    size = int(np.prod(plugin.event_shape))
    checkable = kind in ("text", "label") or plugin.options().get("likelihood") == "categorical"
    checkable = checkable or size == 1 or (plugin.options().get("likelihood") == "bernoulli")
    checkable = checkable and not (plugin.options().get("likelihood") == "bernoulli" and size > 12)
    assert ("normalisation" in report.passed) == checkable, report


# ---------------------------------------------------------------------------------------------
# deliberately broken aggregators


class _Mean(Aggregator):
    """A correct masked mean with an MLP head; the broken variants change one thing."""

    def __init__(self, feature_dim: int, latent_dim: int, **options: object) -> None:
        super().__init__(feature_dim, latent_dim, **options)
        self.rho = nn.Linear(feature_dim, self.head_size)

    def pool(self, h: Tensor, mask: Tensor) -> Tensor:
        present = mask[..., None]
        total = torch.where(present, h, 0.0).sum(-2)
        return total / mask.sum(-1, keepdim=True).clamp_min(1)

    def forward(self, h: Tensor, mask: Tensor, prior: Prior):
        return self.head_to_distribution(self.rho(self.pool(h, mask)))


class OrderDependent(_Mean):
    def pool(self, h: Tensor, mask: Tensor) -> Tensor:
        weights = torch.linspace(1, 2, h.shape[-2], dtype=h.dtype)[:, None]
        return torch.where(mask[..., None], h * weights, 0.0).sum(-2)


class ReadsMaskedRows(_Mean):
    def pool(self, h: Tensor, mask: Tensor) -> Tensor:
        return h.mean(-2) + super().pool(h, mask)


class NanWhenEmpty(_Mean):
    def pool(self, h: Tensor, mask: Tensor) -> Tensor:
        return torch.where(mask[..., None], h, 0.0).sum(-2) / mask.sum(-1, keepdim=True)


class UnusedParameter(_Mean):
    def __init__(self, feature_dim: int, latent_dim: int, **options: object) -> None:
        super().__init__(feature_dim, latent_dim, **options)
        self.forgotten = nn.Linear(3, 3)


class IgnoresFeatures(_Mean):
    def pool(self, h: Tensor, mask: Tensor) -> Tensor:
        return torch.zeros_like(h[..., 0, :])


class Float64Only(_Mean):
    def pool(self, h: Tensor, mask: Tensor) -> Tensor:
        return super().pool(h, mask) + torch.zeros(h.shape[-1], dtype=torch.float64)


class StateOutsideStateDict(_Mean):
    def __init__(self, feature_dim: int, latent_dim: int, **options: object) -> None:
        super().__init__(feature_dim, latent_dim, **options)
        self.register_buffer("shift", torch.randn(feature_dim), persistent=False)

    def pool(self, h: Tensor, mask: Tensor) -> Tensor:
        return super().pool(h, mask) + self.shift


class NanInMaskedRowsLeaks(_Mean):
    def pool(self, h: Tensor, mask: Tensor) -> Tensor:
        return (h * mask[..., None]).sum(-2)


def test_correct_reference_aggregator_passes() -> None:
    check_aggregator(_Mean)


@pytest.mark.parametrize(
    "cls,check",
    [
        (OrderDependent, "permutation invariance"),
        (ReadsMaskedRows, "blind to masked rows"),
        (NanWhenEmpty, "empty set"),
        (UnusedParameter, "gradients"),
        (IgnoresFeatures, "uses present rows"),
        (Float64Only, "float32"),
        (StateOutsideStateDict, "safetensors round trip"),
        (NanInMaskedRowsLeaks, "blind to masked rows"),
        (nn.Linear, "interface"),
    ],
)
def test_broken_aggregators_fail(cls: type, check: str) -> None:
    with pytest.raises(AssertionError, match=f"fails '{check}'"):
        check_aggregator(cls)


def test_kit_message_says_what_broke() -> None:
    with pytest.raises(AssertionError, match=r"changed by .* permuted by \[3, 2, 1, 0\]"):
        check_aggregator(OrderDependent)


# ---------------------------------------------------------------------------------------------
# deliberately broken modalities


@dataclass
class Scalar(ModalityPlugin):
    """A correct 1-element normal modality; the broken variants change one thing."""

    kind: ClassVar[str] = "kit_scalar"
    scale: float = option(1.0, "fixed noise scale")

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (1,)

    def decode_cell(self, cell: object) -> Tensor:
        if not isinstance(cell, float):
            raise DataError(f"kit_scalar cell: expected a float, got {cell!r}")
        return torch.tensor([cell])

    def build_likelihood(self) -> Likelihood:
        return NormalLikelihood((1,), init_log_scale=float(np.log(self.scale)), min_scale=0.0)

    def build_encoder(self, feature_dim: int) -> nn.Module:
        return nn.Linear(1, feature_dim)

    def build_decoder(self, latent_dim: int, num_params: int) -> nn.Module:
        return nn.Sequential(nn.Linear(latent_dim, 4), nn.Tanh(), nn.Linear(4, num_params))

    def preview(self, x: Tensor) -> object:
        return f"{float(x.flatten()[0]):.3f}"


class RaisesValueError(Scalar):
    def decode_cell(self, cell: object) -> Tensor:
        return torch.tensor([float(cell)])  # type: ignore[arg-type]


class AcceptsAnything(Scalar):
    def decode_cell(self, cell: object) -> Tensor:
        return torch.zeros(1)


class WrongFeatureSize(Scalar):
    def build_encoder(self, feature_dim: int) -> nn.Module:
        return nn.Linear(1, feature_dim + 1)


class NoSampleAxes(Scalar):
    def build_decoder(self, latent_dim: int, num_params: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(0, -2), nn.Linear(latent_dim, num_params))


class MixesSamples(Scalar):
    def build_decoder(self, latent_dim: int, num_params: int) -> nn.Module:
        return _Normalised(nn.Linear(latent_dim, num_params))


class _Normalised(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, z: Tensor) -> Tensor:
        z = z.flatten(0, -2)
        return self.inner(z - z.mean(0)).reshape(*z.shape[:-1], -1)


class Unnormalised(Scalar):
    def build_likelihood(self) -> Likelihood:
        return _NoConstant((1,))


class _NoConstant(NormalLikelihood):
    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return super().log_prob(params, x) + 0.5


class NoPreview(Scalar):
    def preview(self, x: Tensor) -> object:
        return None


class NotJsonOptions(Scalar):
    def options(self) -> dict[str, object]:
        return {"scale": torch.tensor(1.0)}


def test_correct_reference_modality_passes() -> None:
    report = check_modality(Scalar(), [0.5, -2.0], ["x", 1])
    assert "normalisation" in report.passed
    assert "registration" in report.skipped


@pytest.mark.parametrize(
    "cls,check",
    [
        (RaisesValueError, "decode bad cells"),
        (AcceptsAnything, "decode bad cells"),
        (WrongFeatureSize, "encoder"),
        (NoSampleAxes, "decoder"),
        (MixesSamples, "decoder"),
        (Unnormalised, "normalisation"),
        (NoPreview, "preview"),
        (NotJsonOptions, "options"),
    ],
)
def test_broken_modalities_fail(cls: type[Scalar], check: str) -> None:
    with pytest.raises(AssertionError, match=f"fails '{check}'"):
        check_modality(cls(), [0.5], ["x"])


def test_unnormalised_categorical_fails() -> None:
    from mmtrain.likelihoods import CategoricalLikelihood

    class Logits(CategoricalLikelihood):
        def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
            return self._sum_event(torch.where(x.bool(), self._event(params), 0.0))

    label = MODALITIES.get("label")
    broken = type(
        "BrokenLabel", (label,), {"kind": "broken", "build_likelihood": lambda self: Logits((1, 3))}
    )
    with pytest.raises(AssertionError, match="fails 'normalisation'.*log_prob differs"):
        check_modality(broken(num_classes=3, hidden=(4,)), [1], [5])


def test_registered_under_another_class_fails() -> None:
    with isolated_registry():
        MODALITIES.register("kit_scalar", AcceptsAnything)
        with pytest.raises(AssertionError, match="fails 'registration'"):
            check_modality(Scalar(), [0.5], ["x"])
    assert "kit_scalar" not in MODALITIES
