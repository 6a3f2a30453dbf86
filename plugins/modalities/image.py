"""Image modalities: `C×H×W` pixels in [0, 1], strided conv encoder and transposed-conv
decoder for any size (docs/math.md §4.6's SVHN networks made size-generic) or one of MoPoE's
published networks (`net`, plugins/modalities/literature.py), and a bernoulli, laplace or
normal likelihood."""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Sequence
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
from .literature import IMAGE_NETS, SigmoidLocation, image_decoder, image_encoder

MODES = {1: "L", 3: "RGB", 4: "RGBA"}
PREVIEW_MIN_SIDE = 64
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types of 8-bit grey, RGB and RGBA, which Pillow opens as MODES[channels].
PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}


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
    net: str = option(
        "conv",
        "architecture: conv (strided convs of hidden_channels, any size); mlp (MoPoE's MNIST "
        "net, dense_hidden); mopoe-svhn (MoPoE's SVHN convs, 32×32); mopoe-polymnist "
        "(MoPoE's PolyMNIST convs, 28×28, then dense_hidden)",
        choices=("conv", *IMAGE_NETS),
    )
    dense_hidden: tuple[int, ...] | None = option(
        None,
        "dense hidden widths of the mlp net (null: [400]) and of mopoe-polymnist's encoder "
        "after its convs (null: [512], MoPoE's latent size); other nets ignore it",
    )
    location: str = option(
        "identity",
        "laplace/normal location: the decoder output, or its sigmoid in (0, 1) (MoPoE's MNIST "
        "decoder)",
        choices=("identity", "sigmoid"),
    )
    resize: bool = option(False, "resize cells of another size (bilinear) instead of failing")

    def validate(self) -> None:
        for name in ("channels", "height", "width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"image option {name!r} must be at least 1")
        if not self.hidden_channels or min(self.hidden_channels) < 1:
            raise ConfigError("image option 'hidden_channels' needs at least one positive width")
        self._validate_net()

    def _validate_net(self) -> None:
        if self.dense_hidden is not None and (not self.dense_hidden or min(self.dense_hidden) < 1):
            raise ConfigError("image option 'dense_hidden' needs at least one positive width")
        size = IMAGE_NETS[self.net].size if self.net in IMAGE_NETS else None
        if size is not None and (self.height, self.width) != size:
            raise ConfigError(
                f"image net {self.net!r} is built for {size[0]}×{size[1]} images, got "
                f"{self.height}×{self.width}; set net: conv or mlp, or resize the data"
            )
        if self.location == "sigmoid" and self.likelihood == "bernoulli":
            raise ConfigError(
                "image option location='sigmoid' is for laplace/normal likelihoods; bernoulli "
                "decoders output logits"
            )

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.channels, self.height, self.width)

    def decode_cell(self, cell: object) -> Tensor:
        return self._to_tensor(self._pixels(cell))

    def decode_batch(self, cells: Sequence[object]) -> Tensor:
        """Cells → `[k, C, H, W]`; equal to `decode_cells(cells)`. Plain PNGs of the
        model's size and mode (what Hugging Face Image columns usually hold) are unpacked
        together (`png_pixels`), the rest through Pillow as `decode_cell` does; pixels are
        scaled as one array when the cells agree in shape and dtype."""
        if type(self).decode_cell is not ImagePlugin.decode_cell:
            # A subclass that changes decode_cell must not get this fast path.
            return self.decode_cells(cells)
        if len(cells) == 0:
            return torch.zeros((0, *self.event_shape))
        arrays = png_pixels(
            [_encoded(cell) for cell in cells], self.channels, self.height, self.width
        )
        pixels = [self._pixels(cell) if a is None else a for cell, a in zip(cells, arrays)]
        first = pixels[0]
        if all(a.shape == first.shape and a.dtype == first.dtype for a in pixels):
            x = self._to_tensor_batch(np.stack(pixels))
            if x is not None:
                return x
        return torch.stack([self._to_tensor(a) for a in pixels])

    def _pixels(self, cell: object) -> np.ndarray:
        """The pixel array of a cell, as it comes (HW, HWC or CHW; any numeric dtype)."""
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
        return array

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

    def _to_tensor_batch(self, arrays: np.ndarray) -> Tensor | None:
        """`_to_tensor` of each of `arrays [k, ...]` (one shape and dtype) as one array
        operation with the same arithmetic; None when some cell needs `_to_tensor`'s own
        checks (resizing, a bad channel count, pixels out of range)."""
        c, h, w = self.event_shape
        inner = arrays.shape[1:]
        if arrays.dtype == bool:
            arrays = arrays.astype(np.float32)
        if not np.issubdtype(arrays.dtype, np.number):
            return None
        if inner == (h, w) and c == 1:
            arrays = arrays[:, None]
        elif inner == (h, w, c) and inner != (c, h, w):
            arrays = arrays.transpose(0, 3, 1, 2)
        elif inner != (c, h, w):
            return None
        if np.issubdtype(arrays.dtype, np.integer):
            if arrays.dtype != np.uint8 and (arrays.min() < 0 or arrays.max() > 255):
                return None
            arrays = arrays.astype(np.float32) / 255.0
        elif not np.isfinite(arrays).all():
            return None
        # Compared as Python floats, as _to_tensor does (a float16 bound would round).
        elif float(arrays.min()) < -1e-6 or float(arrays.max()) > 1 + 1e-6:
            return None
        return torch.as_tensor(np.ascontiguousarray(arrays), dtype=torch.float32).clamp(0, 1)

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
        if self.net != "conv":
            return image_encoder(
                self.net, self.event_shape, self.dense_hidden, feature_dim, self.act
            )
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
        if self.net == "conv":
            net = ConvDecoder(
                latent_dim, per_pixel, (self.height, self.width), self.hidden_channels, act=self.act
            )
            decoder: nn.Module = SampleAxes(net)
        else:
            decoder = image_decoder(
                self.net, self.event_shape, self.dense_hidden, latent_dim, num_params, self.act
            )
        if self.location == "sigmoid":
            decoder = SigmoidLocation(decoder, self.event_size)
        return decoder

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


def _encoded(cell: object) -> bytes | None:
    """The encoded image of a bytes cell or of a Hugging Face Image cell that has bytes."""
    if isinstance(cell, dict):
        cell = cell.get("bytes")
    if isinstance(cell, bytes):
        return cell
    if isinstance(cell, bytearray | memoryview):
        return bytes(cell)
    return None


def png_pixels(
    datas: Sequence[bytes | None], channels: int, height: int, width: int
) -> list[np.ndarray | None]:
    """The pixels (`[H, W]`, or `[H, W, C]` for 3 and 4 channels) of each plain PNG among
    `datas`, as `np.asarray(Image.open(...).convert(MODES[channels]))` gives them; None for
    every other entry (decode those with Pillow).

    Plain: `height` × `width`, 8 bits per sample in the colour type of `MODES[channels]`, not
    interlaced, only IHDR, IDAT and IEND chunks, correct checksums, a zlib stream of exactly
    the scanlines. Opening small images costs Pillow far more than decoding them, so all of
    them go through Pillow's PNG row decoder in one call, stacked as the rows of one tall
    image. For that the first row of each must not refer to the row above: with a zero row
    above, filter Up is None and Paeth is Sub; Average has no such twin, so images that start
    with it are left out, as are rows with unknown filters (Pillow rejects those).
    """
    out: list[np.ndarray | None] = [None] * len(datas)
    colour = PNG_COLOUR_TYPES.get(channels)
    limit = Image.MAX_IMAGE_PIXELS
    if colour is None or (limit is not None and height * width > limit):
        return out
    row_bytes = 1 + width * channels
    where, scanlines = [], []
    for i, data in enumerate(datas):
        lines = None if data is None else _png_scanlines(data, colour, height, width, row_bytes)
        if lines is not None:
            where.append(i)
            scanlines.append(lines)
    if not where:
        return out
    rows = np.frombuffer(b"".join(scanlines), np.uint8).reshape(len(where), height, row_bytes)
    rows = rows.copy()
    first = rows[:, 0, 0]
    usable = (rows[:, :, 0] <= 4).all(axis=1) & (first != 3)
    first[first == 2] = 0
    first[first == 4] = 1
    if not usable.all():
        rows = rows[usable]
        where = [i for i, ok in zip(where, usable.tolist()) if ok]
        if not where:
            return out
    mode = MODES[channels]
    stored = zlib.compress(rows.tobytes(), 0)
    image = Image.frombytes(mode, (width, height * len(where)), stored, "zip", mode)
    shape = (height, width) if channels == 1 else (height, width, channels)
    pixels = np.asarray(image).reshape(len(where), *shape)
    for j, i in enumerate(where):
        out[i] = pixels[j]
    return out


def _png_scanlines(
    data: bytes, colour: int, height: int, width: int, row_bytes: int
) -> bytes | None:
    """The inflated, still filtered scanlines of a plain PNG (see `png_pixels`), else None."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    view = memoryview(data)
    size, pos = len(data), len(PNG_SIGNATURE)
    idat: list[memoryview] = []
    header = (width, height, 8, colour, 0, 0, 0)
    while pos + 12 <= size:
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > size or zlib.crc32(view[pos + 4 : end - 4]) != _u32(data, end - 4):
            return None
        if pos == len(PNG_SIGNATURE):
            if (
                kind != b"IHDR"
                or length != 13
                or struct.unpack_from(">IIBBBBB", data, pos + 8) != header
            ):
                return None
        elif kind == b"IDAT" and length:
            idat.append(view[pos + 8 : end - 4])
        elif kind == b"IEND" and not length and end == size and idat:
            break
        else:
            return None
        pos = end
    else:
        return None
    inflate = zlib.decompressobj()
    expected = height * row_bytes
    try:
        lines = inflate.decompress(b"".join(idat), expected + 1)
    except zlib.error:
        return None
    if len(lines) != expected or not inflate.eof or inflate.unused_data:
        return None
    return lines


def _u32(data: bytes, pos: int) -> int:
    return struct.unpack_from(">I", data, pos)[0]
