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
