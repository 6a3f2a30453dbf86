"""The `signal` modality: a short time series `[channels, length]` with 1-D conv networks and
a normal likelihood."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from mmtrain.errors import ConfigError, DataError
from mmtrain.likelihoods import SCALE_MODES, Likelihood, build_likelihood
from mmtrain.modality import ModalityPlugin, option
from mmtrain.registry import MODALITIES

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))


class SignalEncoder(nn.Module):
    """`x [B, C, L] → h [B, F]`: stride-2 convs (each halves the length, rounding up), then a
    linear layer on the flattened map."""

    def __init__(
        self, channels: int, length: int, widths: tuple[int, ...], kernel: int, features: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Conv1d(channels, width, kernel, 2, kernel // 2), nn.GELU()]
            channels, length = width, (length + 1) // 2
        self.convs = nn.Sequential(*layers)
        self.out = nn.Linear(channels * length, features)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.convs(x).flatten(1))


class SignalDecoder(nn.Module):
    """`z [..., d] → params [..., P]`: a linear layer to the shortest map, then transposed
    convs that retrace the encoder's lengths exactly."""

    def __init__(
        self, latent: int, out_channels: int, length: int, widths: tuple[int, ...], kernel: int
    ) -> None:
        super().__init__()
        lengths = [length]
        for _ in widths:
            lengths.append((lengths[-1] + 1) // 2)
        chain = [*widths[::-1], out_channels]
        self.start = (chain[0], lengths[-1])
        self.inp = nn.Linear(latent, chain[0] * lengths[-1])
        layers: list[nn.Module] = []
        for step in range(len(widths)):
            target, source = lengths[-step - 2], lengths[-step - 1]
            extra = target - 2 * source + 1
            layers.append(
                nn.ConvTranspose1d(
                    chain[step], chain[step + 1], kernel, 2, kernel // 2, output_padding=extra
                )
            )
            if step < len(widths) - 1:
                layers.append(nn.GELU())
        self.convs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        x = self.inp(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        if len(self.convs):
            x = self.convs(torch.nn.functional.gelu(x))
        return x.reshape(*lead, -1)


@MODALITIES.register("signal")
@dataclass
class SignalPlugin(ModalityPlugin):
    """A short time series `[channels, length]`; cells are lists or arrays of numbers
    (`[length]` for one channel, or `[channels, length]`)."""

    kind: ClassVar[str] = "signal"

    length: int = option(32, "samples per series")
    channels: int = option(1, "channels per sample")
    hidden_channels: tuple[int, ...] = option((16, 32), "widths of the stride-2 convs")
    kernel_size: int = option(5, "odd kernel size of the convs")
    scale_mode: str = option("learned", "noise scale of the normal", choices=SCALE_MODES)
    init_log_scale: float = option(0.0, "initial (or fixed) log-scale")
    min_scale: float = option(1e-3, "added to exp(log-scale)")

    def validate(self) -> None:
        if self.length < 1 or self.channels < 1:
            raise ConfigError("signal options 'length' and 'channels' must be at least 1")
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"signal option 'kernel_size' must be odd, got {self.kernel_size}")

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.channels, self.length)

    def decode_cell(self, cell: object) -> Tensor:
        if isinstance(cell, str | bytes | dict) or cell is None:
            raise DataError(f"signal cell: expected a list or array of numbers, got {cell!r:.40}")
        try:
            array = np.asarray(cell, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise DataError(f"signal cell: not numbers ({error})") from None
        if array.ndim == 1 and self.channels == 1:
            array = array[None]
        if array.shape != self.event_shape:
            raise DataError(
                f"signal cell: expected shape {list(self.event_shape)}, got {list(array.shape)}"
            )
        if not np.isfinite(array).all():
            raise DataError("signal cell: contains NaN or infinite values")
        return torch.from_numpy(array)

    def build_likelihood(self) -> Likelihood:
        return build_likelihood(
            "normal",
            self.event_shape,
            scale_mode=self.scale_mode,
            init_log_scale=self.init_log_scale,
            min_scale=self.min_scale,
        )

    def build_encoder(self, feature_dim: int) -> nn.Module:
        return SignalEncoder(
            self.channels, self.length, self.hidden_channels, self.kernel_size, feature_dim
        )

    def build_decoder(self, latent_dim: int, num_params: int) -> nn.Module:
        out_channels = num_params // self.length
        return SignalDecoder(
            latent_dim, out_channels, self.length, self.hidden_channels, self.kernel_size
        )

    def preview(self, x: Tensor) -> Image.Image:
        """A line plot of one series `[channels, length]` (one colour per channel)."""
        values = x.detach().float().cpu().reshape(self.channels, self.length).numpy()
        width, height, margin = max(160, 4 * self.length), 64, 4
        image = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(image)
        low, high = float(values.min()), float(values.max())
        span = high - low or 1.0
        xs = np.linspace(margin, width - margin, self.length)
        for channel, series in enumerate(values):
            ys = height - margin - (series - low) / span * (height - 2 * margin)
            points = list(zip(xs.tolist(), ys.tolist()))
            colour = COLOURS[channel % len(COLOURS)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            else:
                draw.ellipse([xs[0] - 2, ys[0] - 2, xs[0] + 2, ys[0] + 2], fill=colour)
        return image
