"""Networks of the multi-modal VAE literature, offered as options of the built-in plugins
(`image.net`, `text.net`): MoPoE's (Sutter et al., ICLR 2021) MNIST, SVHN, PolyMNIST and
text networks, the unimodal networks of the MNIST-SVHN-Text and PolyMNIST benchmarks
(docs/math.md §4.6; the paper's MNIST-SVHN-Text experiment, arXiv 2309.00380).

The published encoders end in two linear heads (mean and log-variance) on a hidden vector;
here one linear layer maps that vector to the feature size F the aggregator asks for, so with
F = 2d (PoE, MoE) it is exactly the two heads side by side. Decoders output the likelihood's
parameters (`num_params` per example) and take leading sample axes (`SampleAxes`). MoPoE's
text decoder ends in a log-softmax; the categorical likelihood normalises its logits itself,
so the log-softmax is left out (it would change nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._common import SampleAxes, _Act

#: MoPoE's SVHN encoder: (out channels, kernel, stride, padding) of each conv, 32×32 → 1×1
SVHN_CONVS = ((32, 4, 2, 1), (64, 4, 2, 1), (64, 4, 2, 1), (128, 4, 2, 0))
#: MoPoE's SVHN decoder after Dense(d → 128): (out channels, kernel, stride, padding) of each
#: transposed conv, 1×1 → 32×32; the last one's channels are the likelihood's
SVHN_TRANSPOSED = ((64, 4, 1, 0), (64, 4, 2, 1), (32, 4, 2, 1), (None, 4, 2, 1))
#: MoPoE's PolyMNIST encoder: 3×3 convs with stride 2 and padding 1, 28 → 14 → 7 → 4
POLYMNIST_CHANNELS = (32, 64, 128)
#: the PolyMNIST decoder's first map, `[128, 4, 4]` (2048 values)
POLYMNIST_START = (128, 4, 4)
#: MoPoE's text net is built for 8 positions: 8 → 4 → 1 and back
MOPOE_TEXT_LENGTH = 8


def _dense(sizes: tuple[int, ...], act: str) -> list[nn.Module]:
    """Linear layers `sizes[0] → sizes[1] → …`, each followed by the activation."""
    layers: list[nn.Module] = []
    for width_in, width_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(width_in, width_out), _Act(act)]
    return layers


# ---------------------------------------------------------------------------------------------
# images


def mlp_encoder(
    event_shape: tuple[int, ...], hidden: tuple[int, ...], feature_dim: int, act: str
) -> nn.Module:
    """MoPoE's MNIST encoder made size-generic: flatten → Dense(hidden) + act … →
    Dense(F). MoPoE: one hidden layer of 400 on 784 pixels."""
    size = math.prod(event_shape)
    return nn.Sequential(
        nn.Flatten(1), *_dense((size, *hidden), act), nn.Linear(hidden[-1], feature_dim)
    )


def mlp_decoder(latent_dim: int, hidden: tuple[int, ...], num_params: int, act: str) -> nn.Module:
    """MoPoE's MNIST decoder: Dense(d → hidden) + act (the encoder's widths reversed) →
    Dense(P). Linear layers act on the last axis, so sample axes pass through."""
    widths = tuple(reversed(hidden))
    return nn.Sequential(*_dense((latent_dim, *widths), act), nn.Linear(widths[-1], num_params))


def svhn_encoder(channels: int, feature_dim: int, act: str) -> nn.Module:
    """MoPoE's SVHN encoder: four convs (`SVHN_CONVS`) with the activation after each, 32×32
    → 128×1×1, then Dense(128 → F)."""
    layers: list[nn.Module] = []
    width = channels
    for out, kernel, stride, padding in SVHN_CONVS:
        layers += [nn.Conv2d(width, out, kernel, stride, padding), _Act(act)]
        width = out
    return nn.Sequential(*layers, nn.Flatten(1), nn.Linear(width, feature_dim))


def svhn_decoder(latent_dim: int, out_channels: int, act: str) -> nn.Module:
    """MoPoE's SVHN decoder: Dense(d → 128) → act → four transposed convs
    (`SVHN_TRANSPOSED`), 1×1 → 32×32, with the activation between them; `out_channels` maps
    per pixel (3 for RGB means, 6 with network scales)."""
    width = SVHN_CONVS[-1][0]
    layers: list[nn.Module] = [nn.Linear(latent_dim, width), nn.Unflatten(1, (width, 1, 1))]
    for out, kernel, stride, padding in SVHN_TRANSPOSED:
        out = out_channels if out is None else out
        layers += [_Act(act), nn.ConvTranspose2d(width, out, kernel, stride, padding)]
        width = out
    return SampleAxes(nn.Sequential(*layers))


def polymnist_encoder(
    channels: int, hidden: tuple[int, ...], feature_dim: int, act: str
) -> nn.Module:
    """MoPoE's PolyMNIST encoder: 3×3 stride-2 convs (32, 64, 128 channels) with the
    activation, 28×28 → 128×4×4, flatten (2048) → Dense(hidden) + act → Dense(F). MoPoE's
    hidden layer has the latent size (512)."""
    layers: list[nn.Module] = []
    width = channels
    for out in POLYMNIST_CHANNELS:
        layers += [nn.Conv2d(width, out, 3, 2, 1), _Act(act)]
        width = out
    flat = math.prod(POLYMNIST_START)
    return nn.Sequential(
        *layers, nn.Flatten(1), *_dense((flat, *hidden), act), nn.Linear(hidden[-1], feature_dim)
    )


def polymnist_decoder(latent_dim: int, out_channels: int, act: str) -> nn.Module:
    """MoPoE's PolyMNIST decoder: Dense(d → 2048) → act → `[128, 4, 4]` → 3×3 stride-2
    transposed convs 4 → 7 → 14 → 28 (64, 32, `out_channels` channels; output padding 0, 1,
    1) with the activation between them."""
    widths = (*reversed(POLYMNIST_CHANNELS[:-1]), out_channels)
    layers: list[nn.Module] = [
        nn.Linear(latent_dim, math.prod(POLYMNIST_START)),
        _Act(act),
        nn.Unflatten(1, POLYMNIST_START),
    ]
    width = POLYMNIST_START[0]
    for step, (out, output_padding) in enumerate(zip(widths, (0, 1, 1))):
        if step:
            layers.append(_Act(act))
        layers.append(nn.ConvTranspose2d(width, out, 3, 2, 1, output_padding=output_padding))
        width = out
    return SampleAxes(nn.Sequential(*layers))


def _per_pixel(event_shape: tuple[int, ...], num_params: int) -> int:
    """Output channels of a conv decoder: the likelihood's parameters per pixel."""
    return num_params // math.prod(event_shape[1:])


@dataclass(frozen=True)
class ImageNet:
    """An image architecture: `encoder(event_shape, dense_hidden, F, act)`,
    `decoder(event_shape, dense_hidden, d, P, act)`, the image size it is made for (None:
    any) and the dense widths that `dense_hidden: null` stands for."""

    encoder: Callable[[tuple[int, ...], tuple[int, ...], int, str], nn.Module]
    decoder: Callable[[tuple[int, ...], tuple[int, ...], int, int, str], nn.Module]
    size: tuple[int, int] | None = None
    dense_hidden: tuple[int, ...] = ()


IMAGE_NETS: dict[str, ImageNet] = {
    "mlp": ImageNet(
        encoder=mlp_encoder,
        decoder=lambda event, hidden, d, p, act: mlp_decoder(d, hidden, p, act),
        dense_hidden=(400,),
    ),
    "mopoe-svhn": ImageNet(
        encoder=lambda event, hidden, f, act: svhn_encoder(event[0], f, act),
        decoder=lambda event, hidden, d, p, act: svhn_decoder(d, _per_pixel(event, p), act),
        size=(32, 32),
    ),
    "mopoe-polymnist": ImageNet(
        encoder=lambda event, hidden, f, act: polymnist_encoder(event[0], hidden, f, act),
        decoder=lambda event, hidden, d, p, act: polymnist_decoder(d, _per_pixel(event, p), act),
        size=(28, 28),
        dense_hidden=(512,),
    ),
}


def image_encoder(
    net: str,
    event_shape: tuple[int, ...],
    dense_hidden: tuple[int, ...] | None,
    feature_dim: int,
    act: str,
) -> nn.Module:
    """The encoder of the image architecture `net` (an `IMAGE_NETS` name)."""
    spec = IMAGE_NETS[net]
    return spec.encoder(event_shape, dense_hidden or spec.dense_hidden, feature_dim, act)


def image_decoder(
    net: str,
    event_shape: tuple[int, ...],
    dense_hidden: tuple[int, ...] | None,
    latent_dim: int,
    num_params: int,
    act: str,
) -> nn.Module:
    """The decoder of the image architecture `net`: `z [..., d] → params [..., P]`."""
    spec = IMAGE_NETS[net]
    return spec.decoder(event_shape, dense_hidden or spec.dense_hidden, latent_dim, num_params, act)


class SigmoidLocation(nn.Module):
    """Squashes the location parameters (the first `size` of the `P` a location-scale
    likelihood takes; the rest are log-scales) into (0, 1), as MoPoE's MNIST decoder ends in
    a sigmoid before its fixed-scale Laplace."""

    def __init__(self, net: nn.Module, size: int) -> None:
        super().__init__()
        self.net = net
        self.size = size

    def forward(self, z: Tensor) -> Tensor:
        params = self.net(z)
        location, rest = params[..., : self.size], params[..., self.size :]
        return torch.cat((torch.sigmoid(location), rest), dim=-1)


# ---------------------------------------------------------------------------------------------
# text


class _PositionsFirst(nn.Module):
    """`[B, length, symbols] ↔ [B, symbols, length]` around the 1-D convs."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(-2, -1)


def text_encoder(symbols: int, width: int, feature_dim: int, act: str) -> nn.Module:
    """MoPoE's text encoder (FeatureEncText) on one-hot `[B, 8, symbols]`: Conv1d(symbols →
    width, kernel 1), Conv1d(kernel 4, stride 2, padding 1) 8 → 4, Conv1d(kernel 4, stride 2,
    padding 0) 4 → 1, the activation after each, then Dense(width → F). MoPoE: width 2·64."""
    return nn.Sequential(
        _PositionsFirst(),
        nn.Conv1d(symbols, width, 1),
        _Act(act),
        nn.Conv1d(width, width, 4, 2, 1),
        _Act(act),
        nn.Conv1d(width, width, 4, 2, 0),
        _Act(act),
        nn.Flatten(1),
        nn.Linear(width, feature_dim),
    )


def text_decoder(latent_dim: int, width: int, symbols: int, act: str) -> nn.Module:
    """MoPoE's text decoder: Dense(d → width) → `[width, 1]`, ConvTranspose1d(kernel 4,
    stride 1) 1 → 4, ConvTranspose1d(kernel 4, stride 2, padding 1) 4 → 8, the activation
    after each, Conv1d(width → symbols, kernel 1); logits `[..., 8 · symbols]` in position-
    major order."""
    net = nn.Sequential(
        nn.Linear(latent_dim, width),
        nn.Unflatten(1, (width, 1)),
        nn.ConvTranspose1d(width, width, 4, 1, 0),
        _Act(act),
        nn.ConvTranspose1d(width, width, 4, 2, 1),
        _Act(act),
        nn.Conv1d(width, symbols, 1),
    )
    return SampleAxes(net, _PositionsFirst())
