"""Hand-built models whose right answers are known in closed form, for the evaluation tests.

- `LinearGaussianModel`: modalities x_s = W_s z + b_s + σ ε with z ~ N(0, I), linear
  decoders, and an aggregator that returns the exact posterior mean of p(z | x_S) with an
  isotropic scale a little wider than the posterior's largest standard deviation, so
  importance sampling converges to the exact log p(x_S).
- `prototype_model`: a label modality `u` whose encoder pins z to the one-hot of the class
  (PoE with a near-zero-variance expert) and a vector modality `x` whose encoder says
  nothing and whose linear decoder maps the one-hot z to the class prototype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mmtrain.aggregation import Aggregator
from mmtrain.batch import Batch
from mmtrain.distributions import Diagonal
from mmtrain.likelihoods import build_likelihood
from mmtrain.modality import Modality
from mmtrain.model import MultiModalVAE
from mmtrain.priors import FixedPrior, Prior
from mmtrain.registry import AGGREGATORS


class ExactLinearPosterior(Aggregator):
    """q(z | x_S) = N(exact posterior mean, (inflate² · λ_max) I) for a linear Gaussian model.

    The features of modality s are x_s placed in its own block of a `[F = Σ D_s]` vector.
    """

    def __init__(
        self,
        weights: list[Tensor],
        offsets: list[Tensor],
        noise_std: float,
        inflate: float = 1.25,
    ) -> None:
        sizes = [w.shape[0] for w in weights]
        super().__init__(sum(sizes), weights[0].shape[1], 1, "normal", 0.0)
        self.weights = [w.double() for w in weights]
        self.offsets = [b.double() for b in offsets]
        self.starts = np.cumsum([0, *sizes]).tolist()
        self.noise_var = noise_std**2
        self.inflate = inflate

    def forward(self, h: Tensor, mask: Tensor, prior: Prior) -> Diagonal:
        d = self.latent_dim
        precision = torch.eye(d, dtype=torch.float64).expand(h.shape[0], d, d).clone()
        rhs = torch.zeros(h.shape[0], d, dtype=torch.float64)
        for s, (w, b) in enumerate(zip(self.weights, self.offsets)):
            on = mask[:, s].double()[:, None]
            x = h[:, s, self.starts[s] : self.starts[s + 1]].double()
            precision = precision + on[..., None] * (w.T @ w) / self.noise_var
            rhs = rhs + on * ((x - b) @ w) / self.noise_var
        cov = torch.linalg.inv(precision)
        mean = (cov @ rhs[..., None])[..., 0]
        largest = torch.linalg.eigvalsh(cov)[:, -1]
        log_scale = (0.5 * torch.log(largest) + math.log(self.inflate))[:, None].expand(-1, d)
        return Diagonal(mean.float(), log_scale.float().contiguous(), "normal", 0.0)


class BlockPlacer(nn.Module):
    """x_s `[B, D_s]` → `[B, F]` with x_s in columns start..start + D_s."""

    def __init__(self, start: int, size: int, total: int) -> None:
        super().__init__()
        self.start, self.size, self.total = start, size, total

    def forward(self, x: Tensor) -> Tensor:
        out = x.new_zeros(x.shape[0], self.total)
        out[:, self.start : self.start + self.size] = x
        return out


@dataclass
class LinearGaussianModel:
    model: MultiModalVAE
    weights: list[Tensor]
    offsets: list[Tensor]
    noise_std: float

    def sample(self, rows: int, seed: int = 0) -> tuple[Batch, Tensor]:
        """Data from the model with every modality observed, and the latents."""
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(rows, self.weights[0].shape[1], generator=generator)
        x = {}
        for i, (w, b) in enumerate(zip(self.weights, self.offsets)):
            noise = torch.randn(rows, w.shape[0], generator=generator)
            x[f"x{i + 1}"] = z @ w.T + b + self.noise_std * noise
        return Batch(x, torch.ones(rows, len(x), dtype=torch.bool)), z


def linear_gaussian_model(
    sizes: tuple[int, ...] = (3, 4), latent: int = 2, noise_std: float = 0.7, seed: int = 0
) -> LinearGaussianModel:
    generator = torch.Generator().manual_seed(seed)
    weights = [torch.randn(size, latent, generator=generator) for size in sizes]
    offsets = [torch.randn(size, generator=generator) for size in sizes]
    total = sum(sizes)
    starts = np.cumsum([0, *sizes]).tolist()
    modalities = {}
    for i, (w, b) in enumerate(zip(weights, offsets)):
        decoder = nn.Linear(latent, w.shape[0])
        with torch.no_grad():
            decoder.weight.copy_(w)
            decoder.bias.copy_(b)
        likelihood = build_likelihood(
            "normal",
            (w.shape[0],),
            scale_mode="fixed",
            init_log_scale=math.log(noise_std),
            min_scale=0.0,
        )
        modalities[f"x{i + 1}"] = Modality(
            BlockPlacer(starts[i], w.shape[0], total), decoder, likelihood
        )
    aggregator = ExactLinearPosterior(weights, offsets, noise_std)
    model = MultiModalVAE(modalities, aggregator, FixedPrior(latent)).eval()
    return LinearGaussianModel(model, weights, offsets, noise_std)


def prototype_model(prototypes: Tensor) -> MultiModalVAE:
    """`u` (one-hot label `[1, K]`) pins z to one-hot(u); `x`'s decoder maps z to
    `prototypes[k]` for z = one-hot(k); `x`'s encoder carries no information."""
    classes, dim = prototypes.shape
    poe = AGGREGATORS.get("poe")(2 * classes, classes, 1, "normal", 1e-4)
    u_encoder = nn.Sequential(nn.Flatten(), nn.Linear(classes, 2 * classes))
    x_encoder = nn.Linear(dim, 2 * classes)
    with torch.no_grad():
        u_encoder[1].weight.zero_()
        u_encoder[1].weight[:classes].copy_(torch.eye(classes))
        u_encoder[1].bias.zero_()
        u_encoder[1].bias[classes:] = -10.0
        x_encoder.weight.zero_()
        x_encoder.bias.zero_()
        x_encoder.bias[classes:] = 10.0
    u_decoder = nn.Linear(classes, classes)
    x_decoder = nn.Linear(classes, dim)
    with torch.no_grad():
        u_decoder.weight.copy_(20 * torch.eye(classes))
        u_decoder.bias.zero_()
        x_decoder.weight.copy_(prototypes.T)
        x_decoder.bias.zero_()
    modalities = {
        "u": Modality(u_encoder, u_decoder, build_likelihood("categorical", (1, classes))),
        "x": Modality(
            x_encoder,
            x_decoder,
            build_likelihood("normal", (dim,), scale_mode="fixed", init_log_scale=0.0),
        ),
    }
    return MultiModalVAE(modalities, poe, FixedPrior(classes)).eval()


def blobs(rows: int, prototypes: Tensor, spread: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Labels uniform over the classes and x = prototype + spread · N(0, I)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, prototypes.shape[0], (rows,), generator=generator)
    x = prototypes[labels] + spread * torch.randn(rows, prototypes.shape[1], generator=generator)
    return x, labels


def one_hot_labels(labels: Tensor, classes: int) -> Tensor:
    return torch.nn.functional.one_hot(labels, classes).float()[:, None, :]


def image_label_model(size: int = 8, classes: int = 3, seed: int = 0) -> MultiModalVAE:
    """A small untrained model of a `[1, size, size]` Bernoulli image and a label."""
    from mmtrain.priors import build_prior
    from mmtrain.registry import MODALITIES

    torch.manual_seed(seed)
    plugins = {
        "image": MODALITIES.get("image")(
            height=size, width=size, hidden_channels=(4,), likelihood="bernoulli"
        ),
        "label": MODALITIES.get("label")(num_classes=classes, hidden=(8,)),
    }
    modalities = {name: plugin.build(8, 3) for name, plugin in plugins.items()}
    aggregator = AGGREGATORS.get("sum_pooling")(
        8, 3, 1, "normal", 1e-3, pooling_size=8, hidden_size=8
    )
    return MultiModalVAE(modalities, aggregator, build_prior(3)).eval()


def quadrant_images(rows: int, classes: int, size: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Labels uniform over the classes and `[rows, 1, size, size]` images in [0, 1] that are
    bright in a band set by the label, plus noise: easy for a classifier to tell apart."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (rows,), generator=generator)
    images = 0.2 * torch.rand(rows, 1, size, size, generator=generator)
    band = size // classes
    for k in range(classes):
        images[labels == k, :, k * band : (k + 1) * band, :] += 0.7
    return images.clamp(0, 1), labels
