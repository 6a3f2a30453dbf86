"""Text modalities: fixed-length strings over a character alphabet, one-hot `[length, |A|]`
(plus an unknown symbol when mapped), 1-D conv encoder/decoder as in docs/math.md §4.6's text
networks, categorical likelihood."""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from torch import Tensor, nn

from mmtrain import likelihoods
from mmtrain.errors import ConfigError, DataError
from mmtrain.likelihoods import Likelihood
from mmtrain.modality import ModalityPlugin, option
from mmtrain.nets import ACTIVATIONS
from mmtrain.registry import MODALITIES

from ._common import (
    ConvDecoder,
    ConvEncoder,
    SampleAxes,
    _Act,
    bad_cell,
    describe,
    one_hot,
)
from .literature import MOPOE_TEXT_LENGTH, text_decoder, text_encoder

DEFAULT_ALPHABET = string.ascii_lowercase + string.digits + " .,;:!?'-"
UNKNOWN_SYMBOL = "\ufffd"
MIN_SIZE = 4


def _positions_last(x: Tensor) -> Tensor:
    return x.transpose(1, 2)


@MODALITIES.register("text")
@dataclass
class TextPlugin(ModalityPlugin):
    """Character strings of a fixed length; shorter strings are padded, characters outside
    the alphabet fail or map to an unknown symbol."""

    kind: ClassVar[str] = "text"

    length: int = option(8, "characters per example; shorter strings are padded")
    alphabet: str = option(DEFAULT_ALPHABET, "the characters, in one-hot order")
    lowercase: bool = option(True, "lower-case strings before looking characters up")
    unknown: str = option(
        "error",
        "characters outside the alphabet: error, or map to an extra unknown symbol",
        choices=("error", "map"),
    )
    too_long: str = option(
        "error", "strings longer than length: error or truncate", choices=("error", "truncate")
    )
    pad: str = option(" ", "padding character (must be in the alphabet)")
    hidden_channels: tuple[int, ...] = option(
        (128, 128),
        "conv widths: a kernel-1 embedding to the first, then stride-2 layers while the "
        "sequence is at least 4 long",
    )
    act: str = option("relu", "activation between layers", choices=tuple(ACTIVATIONS))
    decoder: str = option(
        "conv",
        "conv: every position independent given z; autoregressive: a GRU reads z and the "
        "characters before each position, so a word is decoded as a whole",
        choices=("conv", "autoregressive"),
    )
    decoder_hidden: int = option(128, "GRU state size of the autoregressive decoder")
    net: str = option(
        "conv",
        "architecture: conv (hidden_channels, any length) or mopoe (MoPoE's 8-character text "
        "net, width hidden_channels[0]; MoPoE's is 128)",
        choices=("conv", "mopoe"),
    )

    def validate(self) -> None:
        if self.length < 1:
            raise ConfigError(f"text option 'length' must be at least 1, got {self.length}")
        if not self.alphabet:
            raise ConfigError("text option 'alphabet' is empty")
        repeated = sorted(c for c, n in Counter(self.alphabet).items() if n > 1)
        if repeated:
            raise ConfigError(f"text alphabet repeats characters: {''.join(repeated)!r}")
        if len(self.pad) != 1 or self.pad not in self.alphabet:
            raise ConfigError(
                f"text option 'pad' must be one character of the alphabet, got {self.pad!r}"
            )
        if self.lowercase and any(c != c.lower() for c in self.alphabet):
            raise ConfigError(
                "text alphabet has upper-case letters that lowercase=true never produces; "
                "set lowercase=false"
            )
        if not self.hidden_channels or min(self.hidden_channels) < 1:
            raise ConfigError("text option 'hidden_channels' needs at least one positive width")
        if self.decoder_hidden < 1:
            raise ConfigError(
                f"text option 'decoder_hidden' must be positive, got {self.decoder_hidden}"
            )
        if self.net == "mopoe" and self.length != MOPOE_TEXT_LENGTH:
            raise ConfigError(
                f"text net 'mopoe' is built for length {MOPOE_TEXT_LENGTH}, got {self.length}; "
                "set net: conv for other lengths"
            )

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.alphabet)}

    @property
    def num_symbols(self) -> int:
        return len(self.alphabet) + (self.unknown == "map")

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.length, self.num_symbols)

    def decode_cell(self, cell: object) -> Tensor:
        return one_hot(self.indices(cell), self.num_symbols)

    def decode_batch(self, cells: Sequence[object]) -> Tensor:
        """Cells → `[k, length, symbols]` with one one-hot fill; equal to
        `decode_cells(cells)`."""
        if type(self).decode_cell is not TextPlugin.decode_cell:
            # A subclass that changes decode_cell must not get this fast path.
            return self.decode_cells(cells)
        indices: list[int] = []
        for cell in cells:
            indices += self.indices(cell)
        return one_hot(indices, self.num_symbols).reshape(-1, *self.event_shape)

    def indices(self, cell: object) -> list[int]:
        """The symbol index of each of the `length` positions of a cell (padded)."""
        if isinstance(cell, bytes):
            try:
                cell = cell.decode("utf-8")
            except UnicodeDecodeError as error:
                raise bad_cell(self.kind, f"bytes are not UTF-8: {error}") from None
        if not isinstance(cell, str):
            raise bad_cell(self.kind, f"expected a string, got {describe(cell)}")
        text = cell.lower() if self.lowercase else cell
        if len(text) > self.length:
            if self.too_long == "error":
                raise bad_cell(
                    self.kind,
                    f"{describe(cell)} has {len(text)} characters, more than length "
                    f"{self.length}; set too_long='truncate' or a larger length",
                )
            text = text[: self.length]
        text = text.ljust(self.length, self.pad)
        unknown_index = len(self.alphabet)
        indices = [self._index.get(c, unknown_index) for c in text]
        if self.unknown == "error" and unknown_index in indices:
            bad = [f"{c!r} at {i}" for i, c in enumerate(text) if c not in self._index]
            raise bad_cell(
                self.kind,
                f"{describe(cell)} has characters outside the alphabet: {', '.join(bad[:5])}; "
                "extend the alphabet or set unknown='map'",
            )
        return indices

    def build_likelihood(self) -> Likelihood:
        if self.decoder == "autoregressive":
            return likelihoods.build_likelihood(
                "autoregressive_categorical", self.event_shape, hidden_size=self.decoder_hidden
            )
        return likelihoods.build_likelihood("categorical", self.event_shape)

    def build_encoder(self, feature_dim: int) -> nn.Module:
        width = self.hidden_channels[0]
        if self.net == "mopoe":
            return text_encoder(self.num_symbols, width, feature_dim, self.act)
        return nn.Sequential(
            _Transpose(),
            nn.Conv1d(self.num_symbols, width, 1),
            _Act(self.act),
            ConvEncoder(
                width, (self.length,), self.hidden_channels, feature_dim, MIN_SIZE, self.act
            ),
        )

    def build_decoder(self, latent_dim: int, num_params: int) -> nn.Module:
        if self.decoder == "autoregressive":
            # The GRU context from z; the likelihood's GRU does the rest.
            return nn.Sequential(
                nn.Linear(latent_dim, self.decoder_hidden),
                _Act(self.act),
                nn.Linear(self.decoder_hidden, num_params),
            )
        width = self.hidden_channels[0]
        if self.net == "mopoe":
            return text_decoder(latent_dim, width, self.num_symbols, self.act)
        net = nn.Sequential(
            ConvDecoder(
                latent_dim, width, (self.length,), self.hidden_channels, MIN_SIZE, self.act
            ),
            _Act(self.act),
            nn.Conv1d(width, self.num_symbols, 1),
        )
        return SampleAxes(net, _positions_last)

    def to_text(self, x: Tensor, strip: bool = True) -> str:
        """The string of one-hot rows or probabilities `[length, symbols]` (argmax per row),
        without trailing padding unless `strip=False`."""
        symbols = self.alphabet + UNKNOWN_SYMBOL
        text = "".join(symbols[i] for i in x.argmax(-1).tolist())
        return text.rstrip(self.pad) if strip else text

    def preview(self, x: Tensor) -> str:
        """The string of one example, or one line per example of a batch (padding kept)."""
        x = x.detach().float().cpu()
        if x.shape[-2:] != self.event_shape:
            raise DataError(f"text preview needs [..., {self.length}, {self.num_symbols}]")
        if x.dim() == 2:
            return self.to_text(x, strip=False)
        rows = x.reshape(-1, *self.event_shape)
        return "\n".join(self.to_text(row, strip=False) for row in rows)


class _Transpose(nn.Module):
    """`[B, length, symbols] → [B, symbols, length]` for the 1-D convs."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(1, 2)
