"""Decoder likelihoods p(x_s | z) (docs/math.md §1.3), summed over the modality's own axes.

A likelihood tells its decoder how many parameters it needs per example (`num_params`) and
evaluates `log_prob(params [..., B, P], x [B, *event]) → [..., B]`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmtrain.distributions import log_density
from mmtrain.errors import ConfigError
from mmtrain.registry import LIKELIHOODS

SCALE_MODES = ("fixed", "learned", "network")


class Likelihood(nn.Module):
    """Base class: the event shape of one example and the density of the decoder output."""

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_shape = tuple(event_shape)

    @property
    def event_size(self) -> int:
        return math.prod(self.event_shape)

    @property
    def num_params(self) -> int:
        raise NotImplementedError

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        raise NotImplementedError

    def _event(self, flat: Tensor) -> Tensor:
        return flat.reshape(*flat.shape[:-1], *self.event_shape)

    def _sum_event(self, values: Tensor) -> Tensor:
        return values.reshape(*values.shape[: values.dim() - len(self.event_shape)], -1).sum(-1)


class _LocationScale(Likelihood):
    family = "normal"

    def __init__(
        self,
        event_shape: tuple[int, ...],
        scale_mode: str = "fixed",
        init_log_scale: float = 0.0,
        min_scale: float = 5e-4,
    ) -> None:
        super().__init__(event_shape)
        if scale_mode not in SCALE_MODES:
            raise ConfigError(f"unknown scale mode {scale_mode!r}; choose one of {SCALE_MODES}")
        self.scale_mode = scale_mode
        self.min_scale = min_scale
        init = torch.full((self.event_size,), float(init_log_scale))
        if scale_mode == "learned":
            self.log_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_scale", init)

    @property
    def num_params(self) -> int:
        return 2 * self.event_size if self.scale_mode == "network" else self.event_size

    def split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        if self.scale_mode == "network":
            loc, log_scale = params.chunk(2, dim=-1)
        else:
            loc, log_scale = params, self.log_scale.expand_as(params)
        return loc, self.min_scale + torch.exp(log_scale)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        loc, scale = self.split(params)
        flat_x = x.reshape(x.shape[0], -1)
        return log_density(flat_x, loc, scale, self.family).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return self._event(self.split(params)[0])


@LIKELIHOODS.register("normal")
class NormalLikelihood(_LocationScale):
    """Diagonal Gaussian, scale = min_scale + exp(log_scale); the scale fixed, learned per
    dimension, or produced by the decoder."""

    family = "normal"


@LIKELIHOODS.register("laplace")
class LaplaceLikelihood(_LocationScale):
    """Factorised Laplace, scale = min_scale + exp(log_scale)."""

    family = "laplace"


@LIKELIHOODS.register("categorical")
class CategoricalLikelihood(Likelihood):
    """Independent categorical variables; x is one-hot `[B, n, C]`, params are logits."""

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__(event_shape)
        if len(self.event_shape) != 2:
            raise ConfigError(
                f"categorical event shape is (variables, classes), got {self.event_shape}"
            )

    @property
    def num_params(self) -> int:
        return self.event_size

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        log_p = F.log_softmax(self._event(params), dim=-1)
        return self._sum_event(torch.where(x.bool(), log_p, 0.0))

    def mean(self, params: Tensor) -> Tensor:
        return F.softmax(self._event(params), dim=-1)


@LIKELIHOODS.register("autoregressive_categorical")
class AutoregressiveCategoricalLikelihood(CategoricalLikelihood):
    """A sequence of categorical symbols, each conditioned on z and on the symbols before it:
    log p(x | z) = Σ_t log p(x_t | x_<t, z) (docs/math.md §1.3).

    The decoder's output (`params [..., B, hidden_size]`) is the context: a GRU starts from it
    and reads it again at every position beside the previous symbol (teacher forcing in
    `log_prob`). Unlike independent positions, a whole word is decided jointly, so an
    uncertain position of a word gives one word at one place rather than a mixture of
    letters. `mean(params)` decodes greedily and returns, at each position, the distribution
    p(x_t | greedy x_<t, z): its argmax is the greedy string; it is not the marginal mean.
    """

    support = "sequence"

    def __init__(self, event_shape: tuple[int, ...], hidden_size: int = 128) -> None:
        super().__init__(event_shape)
        if hidden_size < 1:
            raise ConfigError(f"hidden_size must be positive, got {hidden_size}")
        self.hidden_size = hidden_size
        length, symbols = self.event_shape
        self.rnn = nn.GRU(symbols + hidden_size, hidden_size, batch_first=True)
        self.readout = nn.Linear(hidden_size, symbols)

    @property
    def num_params(self) -> int:
        return self.hidden_size

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        lead = params.shape[:-1]
        context = params.reshape(-1, self.hidden_size)
        targets = x.to(params.dtype).expand(*lead, *self.event_shape).reshape(-1, *self.event_shape)
        previous = F.pad(targets[:, :-1], (0, 0, 1, 0))
        length = self.event_shape[0]
        inputs = torch.cat([previous, context[:, None].expand(-1, length, -1)], -1)
        states, _ = self.rnn(inputs, context[None].contiguous())
        log_p = F.log_softmax(self.readout(states), -1)
        return (targets * log_p).sum((-2, -1)).reshape(lead)

    def mean(self, params: Tensor) -> Tensor:
        lead = params.shape[:-1]
        context = params.reshape(-1, self.hidden_size)
        length, symbols = self.event_shape
        state = context[None].contiguous()
        previous = context.new_zeros(context.shape[0], 1, symbols)
        steps = []
        for _ in range(length):
            output, state = self.rnn(torch.cat([previous, context[:, None]], -1), state)
            probs = F.softmax(self.readout(output), -1)
            steps.append(probs)
            previous = F.one_hot(probs.argmax(-1), symbols).to(probs.dtype)
        return torch.cat(steps, 1).reshape(*lead, length, symbols)


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(Likelihood):
    """Factorised Bernoulli with logits; x in [0, 1] (soft targets allowed)."""

    @property
    def num_params(self) -> int:
        return self.event_size

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        flat_x = x.reshape(x.shape[0], -1).to(params.dtype).expand_as(params)
        return -F.binary_cross_entropy_with_logits(params, flat_x, reduction="none").sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return self._event(torch.sigmoid(params))


def build_likelihood(name: str, event_shape: tuple[int, ...], **options: object) -> Likelihood:
    return LIKELIHOODS.get(name)(event_shape, **options)
