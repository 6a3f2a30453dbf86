"""Posterior and prior distributions: diagonal Normal / Laplace and masked mixtures of them.

Shapes: a diagonal distribution has parameters `[..., d]`; a mixture has component parameters
`[..., C, d]` and logits `[..., C]`. `rsample(L)` returns `[L, ..., d]`; `log_prob(z)` takes
`[L, ..., d]` (or anything broadcastable) and returns `[L, ...]`, summed over the latent axis.
Scales are always given as `min_scale + exp(log_scale)` (docs/math.md §7.10), so every distribution
stores `log_scale` and `min_scale` and the STL copy detaches `loc`, `log_scale` and `logits`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mmtrain import ops

FAMILIES = ("normal", "laplace")
LOG_2PI = math.log(2 * math.pi)


def check_family(family: str) -> str:
    if family not in FAMILIES:
        from mmtrain.errors import ConfigError

        raise ConfigError(f"unknown distribution family {family!r}; choose one of {FAMILIES}")
    return family


def log_density(z: Tensor, loc: Tensor, scale: Tensor, family: str) -> Tensor:
    """Elementwise log density of a Normal or Laplace (not summed)."""
    if family == "normal":
        return -0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI
    return -torch.abs(z - loc) / scale - torch.log(2 * scale)


def cdf(z: Tensor, loc: Tensor, scale: Tensor, family: str) -> Tensor:
    u = (z - loc) / scale
    if family == "normal":
        return 0.5 * (1 + torch.erf(u / math.sqrt(2)))
    return 0.5 - 0.5 * torch.sign(u) * torch.expm1(-torch.abs(u))


def score(z: Tensor, loc: Tensor, scale: Tensor, family: str) -> Tensor:
    """∂/∂z of the elementwise log density."""
    if family == "normal":
        return -(z - loc) / scale**2
    return -torch.sign(z - loc) / scale


def standard_noise(shape: torch.Size, like: Tensor, family: str) -> Tensor:
    if family == "normal":
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    uniform = torch.rand(shape, dtype=like.dtype, device=like.device) - 0.5
    tiny = torch.finfo(like.dtype).tiny
    return -torch.sign(uniform) * torch.log((1 - 2 * uniform.abs()).clamp_min(tiny))


@dataclass
class Diagonal:
    """Factorised Normal or Laplace with scale `min_scale + exp(log_scale)`."""

    loc: Tensor
    log_scale: Tensor
    family: str = "normal"
    min_scale: float = 0.0

    @property
    def scale(self) -> Tensor:
        return self.min_scale + torch.exp(self.log_scale)

    @property
    def latent_dim(self) -> int:
        return self.loc.shape[-1]

    @property
    def mean(self) -> Tensor:
        return self.loc

    def rsample(self, num_samples: int = 1) -> Tensor:
        shape = torch.Size((num_samples, *self.loc.shape))
        return self.loc + self.scale * standard_noise(shape, self.loc, self.family)

    def log_prob(self, z: Tensor) -> Tensor:
        return log_density(z, self.loc, self.scale, self.family).sum(-1)

    def detached(self) -> Diagonal:
        """The STL copy: same density, no gradient to the parameters."""
        return Diagonal(self.loc.detach(), self.log_scale.detach(), self.family, self.min_scale)


@dataclass
class Mixture:
    """Mixture of diagonal Normals or Laplaces whose absent components have log-weight -inf.

    `reparam="implicit"` samples with implicit reparameterisation through the distributional
    transform (docs/math.md §2.6): path-wise gradients reach the component parameters and the logits.
    `reparam="component"` samples a component and reparameterises within it: unbiased for the
    component parameters, no path-wise gradient to the logits (allowed for MoE, whose weights
    are constants).
    """

    loc: Tensor
    log_scale: Tensor
    logits: Tensor
    component_mask: Tensor | None = None
    family: str = "normal"
    min_scale: float = 0.0
    reparam: str = "implicit"

    @property
    def scale(self) -> Tensor:
        return self.min_scale + torch.exp(self.log_scale)

    @property
    def latent_dim(self) -> int:
        return self.loc.shape[-1]

    @property
    def mask(self) -> Tensor:
        if self.component_mask is None:
            return torch.ones_like(self.logits, dtype=torch.bool)
        return self.component_mask

    @property
    def log_weights(self) -> Tensor:
        masked = torch.where(self.mask, self.logits, float("-inf"))
        any_present = self.mask.any(-1, keepdim=True)
        return torch.where(any_present, torch.log_softmax(masked, dim=-1), float("-inf"))

    @property
    def mean(self) -> Tensor:
        weights = torch.exp(self.log_weights)
        return (weights[..., None] * torch.where(self.mask[..., None], self.loc, 0)).sum(-2)

    def log_prob(self, z: Tensor) -> Tensor:
        loc, log_scale = self.loc, self.log_scale
        logits, mask = self.logits, self.mask
        batch_shape = loc.shape[:-2]
        if z.dim() == loc.dim() - 1:
            z = z[None]
        # The fused op takes flat [L, B, d] and [B, C, d]; broadcast and flatten batch axes.
        sample_shape = z.shape[: z.dim() - len(batch_shape) - 1]
        full_batch = torch.broadcast_shapes(batch_shape, z.shape[len(sample_shape) : -1])
        num_components, dim = loc.shape[-2], loc.shape[-1]
        loc = loc.expand(*full_batch, num_components, dim).reshape(-1, num_components, dim)
        log_scale = log_scale.expand(*full_batch, num_components, dim).reshape(
            -1, num_components, dim
        )
        logits = logits.expand(*full_batch, num_components).reshape(-1, num_components)
        mask = mask.expand(*full_batch, num_components).reshape(-1, num_components)
        flat_z = z.expand(*sample_shape, *full_batch, dim).reshape(-1, loc.shape[0], dim)
        out = ops.masked_mixture_log_prob(
            flat_z, loc, log_scale, logits, mask, self.family, self.min_scale
        )
        return out.reshape(*sample_shape, *full_batch)

    def detached(self) -> Mixture:
        return Mixture(
            self.loc.detach(),
            self.log_scale.detach(),
            self.logits.detach(),
            self.component_mask,
            self.family,
            self.min_scale,
            self.reparam,
        )

    def _sample_components(self, num_samples: int) -> Tensor:
        """Draw a component per sample and return the detached draw `[L, ..., d]`."""
        weights = torch.exp(self.log_weights.detach())
        dead = ~self.mask.any(-1, keepdim=True)
        weights = torch.where(dead, 1.0, weights)
        flat = weights.reshape(-1, weights.shape[-1])
        index = torch.multinomial(flat, num_samples, replacement=True).T
        index = index.reshape(num_samples, *weights.shape[:-1])
        gather = index[..., None, None].expand(*index.shape, 1, self.latent_dim)
        loc = self.loc.expand(num_samples, *self.loc.shape)
        scale = self.scale.expand(num_samples, *self.loc.shape)
        chosen_loc = torch.gather(loc, -2, gather).squeeze(-2)
        chosen_scale = torch.gather(scale, -2, gather).squeeze(-2)
        noise = standard_noise(chosen_loc.shape, chosen_loc, self.family)
        return chosen_loc + chosen_scale * noise

    def rsample(self, num_samples: int = 1) -> Tensor:
        if self.reparam == "component" or not torch.is_grad_enabled():
            return self._sample_components(num_samples)
        z = self._sample_components(num_samples).detach()
        # A mixture with no component has no density; give it uniform weights so the draw and
        # its gradient stay finite (such rows are excluded by every caller).
        dead = ~self.mask.any(-1, keepdim=True)
        log_weights = torch.where(dead, 0.0, self.log_weights)
        return implicit_reparameterisation(z, self.loc, self.scale, log_weights, self.family)


def implicit_reparameterisation(
    z: Tensor, loc: Tensor, scale: Tensor, log_weights: Tensor, family: str
) -> Tensor:
    """Attach path-wise gradients to a detached mixture draw `z` (docs/math.md §2.6).

    With the distributional transform F (coordinate j's CDF given coordinates < j),
    ∂z/∂θ = −J⁻¹ ∂F/∂θ where J = ∂F/∂z is lower triangular. Returns z + (s − stop(s)) with
    s = −J⁻¹ F(z): equal to z in value, with exactly that gradient.
    """
    zc = z[..., None, :]
    log_dens = log_density(zc, loc, scale, family)
    # w_k^(j) ∝ π_k Π_{i<j} f_k(z_i): exclusive cumulative sum over coordinates, in log space.
    previous = torch.cumsum(log_dens, dim=-1) - log_dens
    log_w = torch.log_softmax(log_weights[..., None] + previous, dim=-2)
    w = torch.exp(log_w)
    component_cdf = cdf(zc, loc, scale, family)
    transform = (w * component_cdf).sum(-2)

    with torch.no_grad():
        wd, cdfd = w.detach(), component_cdf.detach()
        dens = torch.exp(log_dens.detach())
        grads = score(zc, loc.detach(), scale.detach(), family)
        weighted_cdf = torch.einsum("...kj,...ki->...ji", wd * cdfd, grads)
        mean_grad = torch.einsum("...kj,...ki->...ji", wd, grads)
        jacobian = weighted_cdf - transform.detach()[..., :, None] * mean_grad
        dim = z.shape[-1]
        strict_lower = torch.ones(dim, dim, dtype=torch.bool, device=z.device).tril(-1)
        jacobian = torch.where(strict_lower, jacobian, 0.0)
        diagonal = (wd * dens).sum(-2).clamp_min(torch.finfo(z.dtype).tiny)
        jacobian = jacobian + torch.diag_embed(diagonal)
    solved = torch.linalg.solve_triangular(jacobian, transform[..., None], upper=False)
    shift = -solved[..., 0]
    return z + (shift - shift.detach())


Distribution = Diagonal | Mixture
