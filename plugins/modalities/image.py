"""Image modalities: `C×H×W` pixels in [0, 1], strided conv encoder and transposed-conv
decoder for any size (SPEC §4.6's SVHN networks made size-generic), and a bernoulli, laplace
or normal likelihood."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from mmtrain import likelihoods
from mmtrain.errors import ConfigError, DataError
from mmtrain.likelihoods import SCALE_MODES, Likelihood
from mmtrain.modality import ModalityPlugin, option
from mmtrain.nets import ACTIVATIONS
from mmtrain.registry import MODALITIES

from ._common import (
    ConvDecoder,
    ConvEncoder,
    SampleAxes,
    bad_cell,
    describe,
)

MODES = {1: "L", 3: "RGB", 4: "RGBA"}
PREVIEW_MIN_SIDE = 64


@MODALITIES.register("image")
@dataclass
class ImagePlugin(ModalityPlugin):
    """Images of a fixed size; cells are Hugging Face Image cells, PIL images, arrays (HWC or
    CHW; integers 0–255 or floats in [0, 1]) or encoded PNG/JPEG bytes."""

    kind: ClassVar[str] = "image"

    channels: int = option(1, "colour channels: 1 (gray), 3 (RGB) or 4 (RGBA) for PIL cells")
    height: int = option(28, "image height in pixels")
    width: int = option(28, "image width in pixels")
    likelihood: str = option(
        "laplace", "pixel likelihood", choices=("bernoulli", "laplace", "normal")
    )
    scale_mode: str = option(
        "fixed",
        "laplace/normal scale: fixed, learned per pixel, or output by the decoder",
        choices=SCALE_MODES,
    )
    init_log_scale: float = option(
        math.log(0.75), "initial (or fixed) log-scale; log 0.75 is MoPoE's fixed scale"
    )
    min_scale: float = option(5e-4, "added to exp(log-scale)")
    hidden_channels: tuple[int, ...] = option(
        (32, 64, 64, 128),
        "conv widths; each stride-2 layer halves the image while its smaller side is >= 8",
    )
    act: str = option("relu", "activation between layers", choices=tuple(ACTIVATIONS))
    resize: bool = option(False, "resize cells of another size (bilinear) instead of failing")

    def validate(self) -> None:
        for name in ("channels", "height", "width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"image option {name!r} must be at least 1")
        if not self.hidden_channels or min(self.hidden_channels) < 1:
            raise ConfigError("image option 'hidden_channels' needs at least one positive width")

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.channels, self.height, self.width)

    def decode_cell(self, cell: object) -> Tensor:
        if isinstance(cell, dict):
            cell = self._from_hf(cell)
        if isinstance(cell, bytes | bytearray | memoryview):
            cell = self._open(bytes(cell), "image bytes")
        if isinstance(cell, Image.Image):
            if self.channels not in MODES:
                raise bad_cell(
                    self.kind, f"PIL images have 1, 3 or 4 channels; the model has {self.channels}"
                )
            array = np.asarray(cell.convert(MODES[self.channels]))
        elif isinstance(cell, np.ndarray | Tensor | list):
            array = cell.detach().cpu().numpy() if isinstance(cell, Tensor) else np.asarray(cell)
        else:
            raise bad_cell(
                self.kind,
                "expected a PIL image, an array, encoded image bytes or a Hugging Face Image "
                f"cell, got {describe(cell)}",
            )
        return self._to_tensor(array)

    def _from_hf(self, cell: dict) -> Image.Image:
        if cell.get("bytes") is not None:
            return self._open(cell["bytes"], "Image cell bytes")
        if cell.get("path"):
            try:
                with open(cell["path"], "rb") as handle:
                    return self._open(handle.read(), f"image file {cell['path']}")
            except OSError as error:
                raise bad_cell(self.kind, f"cannot read {cell['path']}: {error}") from None
        raise bad_cell(self.kind, f"Image cell has neither bytes nor path: {describe(cell)}")

    def _open(self, data: bytes, what: str) -> Image.Image:
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except UnidentifiedImageError:
            raise bad_cell(
                self.kind,
                f"cannot decode {what} ({len(data)} bytes): not an image format Pillow reads",
            ) from None
        except Exception as error:  # noqa: BLE001 - PIL raises many kinds for bad files
            raise bad_cell(
                self.kind, f"cannot decode {what} ({len(data)} bytes): {error}"
            ) from None
        return image

    def _to_tensor(self, array: np.ndarray) -> Tensor:
        c, h, w = self.event_shape
        if array.dtype == bool:
            array = array.astype(np.float32)
        if not np.issubdtype(array.dtype, np.number):
            raise bad_cell(self.kind, f"pixel array has dtype {array.dtype}, expected numbers")
        if array.ndim == 2:
            array = array[None]
        elif array.ndim == 3:
            array = self._channels_first(array)
        else:
            raise bad_cell(self.kind, f"expected an H×W or 3-D array, got shape {array.shape}")
        if array.shape[0] != c:
            raise bad_cell(self.kind, f"expected {c} channel(s), got shape {array.shape}")
        if np.issubdtype(array.dtype, np.integer):
            if array.min() < 0 or array.max() > 255:
                raise bad_cell(
                    self.kind,
                    f"integer pixels must lie in 0..255, got {array.min()}..{array.max()}",
                )
            array = array.astype(np.float32) / 255.0
        else:
            if not np.isfinite(array).all():
                raise bad_cell(self.kind, "pixel values contain NaN or infinity")
            low, high = float(array.min()), float(array.max())
            if low < -1e-6 or high > 1 + 1e-6:
                raise bad_cell(
                    self.kind,
                    f"float pixels must lie in [0, 1], got {low:.4g}..{high:.4g} "
                    "(divide 0..255 values by 255)",
                )
        x = torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32).clamp(0, 1)
        if x.shape[1:] != (h, w):
            if not self.resize:
                raise bad_cell(
                    self.kind,
                    f"expected a {h}×{w} image, got {x.shape[1]}×{x.shape[2]}; "
                    "set resize=true to resize",
                )
            x = F.interpolate(x[None], (h, w), mode="bilinear", antialias=True)[0].clamp(0, 1)
        return x

    def _channels_first(self, array: np.ndarray) -> np.ndarray:
        c, h, w = self.event_shape
        if array.shape == (c, h, w):
            return array
        if array.shape == (h, w, c):
            return array.transpose(2, 0, 1)
        if self.resize and array.shape[-1] == c:
            return array.transpose(2, 0, 1)
        if self.resize and array.shape[0] == c:
            return array
        raise bad_cell(
            self.kind,
            f"expected an array of shape {(c, h, w)} (CHW) or {(h, w, c)} (HWC), got {array.shape}",
        )

    def build_likelihood(self) -> Likelihood:
        if self.likelihood == "bernoulli":
            return likelihoods.build_likelihood("bernoulli", self.event_shape)
        return likelihoods.build_likelihood(
            self.likelihood,
            self.event_shape,
            scale_mode=self.scale_mode,
            init_log_scale=self.init_log_scale,
            min_scale=self.min_scale,
        )

    def build_encoder(self, feature_dim: int) -> nn.Module:
        return ConvEncoder(
            self.channels,
            (self.height, self.width),
            self.hidden_channels,
            feature_dim,
            act=self.act,
        )

    def build_decoder(self, latent_dim: int, num_params: int) -> nn.Module:
        per_pixel, rest = divmod(num_params, self.height * self.width)
        if rest:
            raise ConfigError(f"{num_params} likelihood parameters do not fit {self.event_shape}")
        net = ConvDecoder(
            latent_dim, per_pixel, (self.height, self.width), self.hidden_channels, act=self.act
        )
        return SampleAxes(net)

    def preview(self, x: Tensor) -> Image.Image:
        """One image `[C, H, W]`, or a grid of a batch `[N, C, H, W]` (at most 64)."""
        x = x.detach().float().cpu()
        if x.dim() == 2:
            x = x[None]
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.numel() == 0:
            raise DataError(f"image preview needs [C, H, W] or [N, C, H, W], got {tuple(x.shape)}")
        x = x[:64].clamp(0, 1).nan_to_num(0.0)
        n, c, h, w = x.shape
        if c not in MODES:
            x = x.permute(0, 2, 1, 3).reshape(n, 1, h, c * w)
            n, c, h, w = x.shape
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        grid = torch.ones(c, rows * (h + 1) - 1, cols * (w + 1) - 1)
        for i in range(n):
            r, col = divmod(i, cols)
            grid[:, r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = x[i]
        pixels = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        image = Image.fromarray(pixels[..., 0] if c == 1 else pixels, MODES[c])
        factor = min(8, max(1, math.ceil(PREVIEW_MIN_SIDE / min(h, w))))
        if factor > 1:
            image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
        return image
