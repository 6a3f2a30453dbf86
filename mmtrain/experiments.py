"""The paper's three simulated experiments (SPEC §4.1–4.3, §6): data, model, training on
in-memory tensors, and the evaluation each script reports."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from mmtrain import metrics, simulations
from mmtrain.batch import Batch
from mmtrain.errors import ConfigError
from mmtrain.masks import SUBSET_MODES
from mmtrain.model import MultiModalVAE
from mmtrain.nets import check_init_scheme, initialise
from mmtrain.objectives import combined_stderr, importance_sampling, objective_key
from mmtrain.optim import GRADIENT_MODES, build_optimizer, postprocess_gradients
from mmtrain.priors import build_prior
from mmtrain.registry import AGGREGATORS, MODALITIES, OBJECTIVES, plugins_of, provenance

EXPERIMENTS = ("linear-gaussian", "ivae-bimodal", "ivae-multimodal")


@dataclass
class ExperimentSettings:
    """Every knob of one experiment run; `defaults(name)` gives SPEC §6's values."""

    experiment: str
    aggregator: str
    objective: str = "masked"
    steps: int = 2000
    modalities: int = 5
    batch_size: int = 500
    seed: int = 1
    lr: float = 1e-3
    clip: float = 100.0
    gradient_mode: str = "elementwise"
    beta: float = 1.0
    samples: int = 1
    stl: bool = True
    num_components: int = 1
    family: str = "normal"
    min_scale: float = 1e-3
    hidden: int = 256
    feature_dim: int | None = None
    subset_mode: str = "faithful"
    is_samples: int = 500
    faithful_data: bool = True
    poe_reference_bug: bool = False
    num_examples: int | None = None
    kernel_backend: str | None = None
    init: str = "flax"
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def defaults(cls, experiment: str, aggregator: str | None = None, **overrides: object):
        if experiment not in EXPERIMENTS:
            raise ConfigError(
                f"unknown experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS)}"
            )
        if experiment == "linear-gaussian":
            base = cls(experiment, aggregator or "sum_pooling")
        elif experiment == "ivae-bimodal":
            base = cls(
                experiment,
                aggregator or "sum_pooling",
                modalities=2,
                batch_size=250,
                lr=5e-4,
                clip=1000.0,
                num_components=5,
                hidden=128,
                is_samples=64,
            )
        else:
            base = cls(
                experiment,
                aggregator or "sum_pooling_mixture",
                modalities=4,
                batch_size=250,
                seed=2,
                lr=5e-4,
                clip=1000.0,
                num_components=5,
                min_scale=5e-4,
                is_samples=512,
            )
        given = {k: v for k, v in overrides.items() if v is not None}
        settings = replace(base, **given)
        settings.validate()
        return settings

    def validate(self) -> None:
        AGGREGATORS.get(self.aggregator)
        OBJECTIVES.get(self.objective)
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "samples": self.samples,
            "is_samples": self.is_samples,
            "num_components": self.num_components,
            "hidden": self.hidden,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {value}")
        if self.lr <= 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr}")
        if self.gradient_mode not in GRADIENT_MODES:
            raise ConfigError(f"gradient mode must be one of {GRADIENT_MODES}")
        check_init_scheme(self.init)
        if self.subset_mode not in SUBSET_MODES:
            raise ConfigError(f"subset mode must be one of {SUBSET_MODES}")
        if self.experiment == "linear-gaussian" and self.modalities < 1:
            raise ConfigError("linear-gaussian needs at least one modality")
        if self.experiment == "ivae-bimodal" and self.modalities != 2:
            raise ConfigError("ivae-bimodal has exactly two modalities (u and x)")
        if self.aggregator == "poe" and self.num_components != 1:
            raise ConfigError(
                f"poe needs a single-component prior but this experiment uses K = "
                f"{self.num_components}; pass --components 1 or choose another aggregator"
            )


@dataclass
class ExperimentData:
    """Training (and optional test) tensors plus what the evaluation needs."""

    train: Batch
    test: Batch | None
    types: dict[str, str]
    sources_train: np.ndarray | None = None
    sources_test: np.ndarray | None = None
    linear: simulations.LinearGaussianData | None = None


def _to_batch(data: simulations.SimulatedDataset) -> Batch:
    x = {name: torch.as_tensor(value, dtype=torch.float32) for name, value in data.x.items()}
    return Batch(x, torch.as_tensor(data.avail, dtype=torch.bool))


def make_data(settings: ExperimentSettings) -> ExperimentData:
    if settings.experiment == "linear-gaussian":
        linear = simulations.make_linear_gaussian(
            num_modalities=settings.modalities,
            num_examples=settings.num_examples or 5000,
            seed=settings.seed,
        )
        x = {f"x{i + 1}": torch.as_tensor(v, dtype=torch.float32) for i, v in enumerate(linear.x)}
        avail = torch.ones(linear.x[0].shape[0], len(x), dtype=torch.bool)
        return ExperimentData(Batch(x, avail), None, dict.fromkeys(x, "normal"), linear=linear)
    if settings.experiment == "ivae-bimodal":
        data = simulations.make_ivae_bimodal(
            num_examples=settings.num_examples or 4000, seed=settings.seed
        )
        return ExperimentData(_to_batch(data), None, data.modality_types, data.sources, None)
    train, test = simulations.make_ivae_multimodal(
        num_modalities=settings.modalities,
        num_examples=settings.num_examples or 10000,
        family="gaussian" if settings.family == "normal" else "laplace",
        faithful=settings.faithful_data,
        seed=settings.seed,
    )
    return ExperimentData(
        _to_batch(train), _to_batch(test), train.modality_types, train.sources, test.sources
    )


def build_model(settings: ExperimentSettings, data: ExperimentData) -> MultiModalVAE:
    """The architecture of each script (SPEC §4.1–4.3), initialised with `settings.init`."""
    aggregator_cls = AGGREGATORS.get(settings.aggregator)
    experiment = settings.experiment
    if experiment == "linear-gaussian":
        assert data.linear is not None
        latent_dim = data.linear.latent_dim
        feature_dim = 2 * latent_dim
    else:
        latent_dim = 2 if experiment == "ivae-bimodal" else 10
        feature_dim = aggregator_cls.required_feature_dim(latent_dim) or (
            settings.feature_dim or settings.hidden
        )
    hidden = settings.hidden
    modalities = {}
    for name, x in data.train.x.items():
        event_shape = tuple(x.shape[1:])
        kind = data.types[name]
        if experiment == "linear-gaussian":
            options = {"decoder": "linear", "scale_mode": "fixed", "init_log_scale": 0.0}
        elif experiment == "ivae-bimodal":
            options = {
                "decoder": "injective",
                "scale_mode": "fixed",
                "init_log_scale": math.log(0.1),
            }
        else:
            options = {"decoder": "injective", "scale_mode": "learned", "init_log_scale": 0.0}
        if kind == "categorical":
            options = {"decoder": "injective"}
        plugin = MODALITIES.get("vector")(
            shape=event_shape,
            likelihood=kind,
            encoder_hidden=(hidden, hidden),
            min_scale=settings.min_scale,
            **options,
        )
        modalities[name] = plugin.build(feature_dim, latent_dim)
    aggregator_options: dict[str, object] = {}
    if settings.aggregator.startswith(("sum_pooling", "self_attention")):
        aggregator_options = {"pooling_size": hidden, "hidden_size": hidden}
    if settings.aggregator.startswith("self_attention"):
        aggregator_options |= {"attention_size": hidden, "num_heads": 4, "depth": 1}
    if settings.aggregator == "poe":
        aggregator_options = {"poe_reference_bug": settings.poe_reference_bug}
    aggregator_options |= settings.extra.get("aggregator_options", {})  # type: ignore[arg-type]
    aggregator = aggregator_cls(
        feature_dim,
        latent_dim,
        settings.num_components,
        settings.family,
        settings.min_scale,
        **aggregator_options,
    )
    prior = build_prior(latent_dim, settings.num_components, settings.family)
    return initialise(MultiModalVAE(modalities, aggregator, prior), settings.init)


def epoch_batches(
    num_examples: int, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """A random permutation split into N // batch_size batches, remainder dropped (SPEC §2.7)."""
    order = torch.randperm(num_examples, generator=generator)
    for start in range(0, num_examples - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def take(batch: Batch, index: torch.Tensor) -> Batch:
    return Batch({k: v[index] for k, v in batch.x.items()}, batch.avail[index])


def train_model(
    model: MultiModalVAE, data: Batch, settings: ExperimentSettings, progress: bool = True
) -> dict[str, float]:
    """Run `settings.steps` optimiser steps; return timing and the last logged terms."""
    objective = OBJECTIVES.get(settings.objective)
    optimizer = build_optimizer(model.parameters(), "adam", settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    batch_size = min(settings.batch_size, data.size)
    steps_done, nan_entries = 0, 0
    running: dict[str, float] = {}
    bar = tqdm(
        total=settings.steps,
        desc=f"{settings.aggregator}/{settings.objective}",
        disable=not progress,
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    model.train()
    while steps_done < settings.steps:
        for index in epoch_batches(data.size, batch_size, generator):
            out = objective(
                model,
                take(data, index),
                samples=settings.samples,
                beta=settings.beta,
                stl=settings.stl,
                subset_mode=settings.subset_mode,
            )
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            nan_entries += postprocess_gradients(
                model.parameters(), settings.gradient_mode, settings.clip
            )
            optimizer.step()
            steps_done += 1
            logged = out.logged()
            running = {k: 0.9 * running.get(k, v) + 0.1 * v for k, v in logged.items()}
            shown = running.get(objective_key(settings.objective))
            if shown is not None and (steps_done % 10 == 0 or steps_done == settings.steps):
                bar.set_postfix(objective=f"{shown:.2f}")
            bar.update(1)
            if steps_done >= settings.steps:
                break
    seconds = time.perf_counter() - start
    bar.close()
    return {
        "seconds": seconds,
        "steps_per_second": steps_done / seconds,
        "nan_gradient_entries": nan_entries,
        **{f"train_{k}": v for k, v in running.items()},
    }


@torch.no_grad()
def objective_estimate(
    model: MultiModalVAE, data: Batch, settings: ExperimentSettings
) -> dict[str, float]:
    """Per-example training objective (`masked_objective` or `mixture_objective`) with a
    random S and L = 1, and the ELBO of q(z|x) (β = 1), over every full batch of `data`.
    Reconstruction weights are 1, as in every evaluation."""
    objective = OBJECTIVES.get(settings.objective)
    generator = torch.Generator().manual_seed(settings.seed + 17)
    batch_size = min(settings.batch_size, data.size)
    value, elbo, count = 0.0, 0.0, 0
    elbo_missing = False
    for index in epoch_batches(data.size, batch_size, generator):
        out = objective(
            model,
            take(data, index),
            samples=1,
            beta=settings.beta,
            subset_mode=settings.subset_mode,
            reconstruction_weights=False,
            elbo=True,
        )
        value += float(out.per_example.sum())
        if out.elbo is None:
            elbo_missing = True
        else:
            elbo += float(out.elbo.sum())
        count += len(index)
    result = {objective_key(settings.objective): value / count}
    if not elbo_missing:
        result["elbo"] = elbo / count
    return result


@torch.no_grad()
def is_log_likelihood(
    model: MultiModalVAE,
    data: Batch,
    num_samples: int,
    batch_size: int,
    mask: torch.Tensor | None = None,
) -> tuple[float, float]:
    """Per-example importance-sampled log-likelihood over every full batch (SPEC §4.4) and
    its Monte-Carlo standard error (`objectives.ImportanceEstimate`)."""
    estimates, errors = [], []
    batch_size = min(batch_size, data.size)
    for start in range(0, data.size - batch_size + 1, batch_size):
        index = torch.arange(start, start + batch_size)
        sub_mask = None if mask is None else mask[index]
        estimate = importance_sampling(model, take(data, index), num_samples, sub_mask)
        estimates.append(estimate.log_likelihood)
        errors.append(estimate.stderr)
    values = torch.cat(estimates)
    return float(values.double().mean()), combined_stderr(torch.cat(errors))


@torch.no_grad()
def posterior_sample(model: MultiModalVAE, data: Batch, mask: torch.Tensor | None = None):
    """One sample z ~ q(z | x_S) per example (MCC uses a sample, not the mean)."""
    q = model.encode(data, mask)
    return q.rsample(1)[0].numpy()


def mcc(sources: np.ndarray, latents: np.ndarray, settings: ExperimentSettings) -> dict[str, float]:
    """The four MCC values with `cca_dim = 1` on the rows in a seeded random order, as the
    reference scripts permute rows before splitting them into halves."""
    return metrics.compute_mcc_permuted(sources, latents, 1, settings.seed).as_dict()


def linear_metrics(model: MultiModalVAE, data: ExperimentData, beta: float) -> dict[str, float]:
    """Exact log-likelihoods of the learned, PPCA-MLE and true linear models (per example).

    `exact_ll`: the learned model's own marginal, x ~ N(b, W Wᵀ + diag σ²) with the decoders'
    variances σ² = (min_scale + exp(log_scale))². `exact_ll_reference_quirk`: the reference
    scripts' number, the same W and b with the PPCA noise variance σ̃² in place of the
    decoders' (not the model's likelihood; kept for comparison with the paper). `true_ll`:
    the generating W, b and noise variance. `mle_ll`: the PPCA maximum-likelihood fit.
    """
    from mmtrain.evaluation.simulated import linear_parameters

    linear = data.linear
    assert linear is not None
    x = np.concatenate(linear.x, axis=1)
    n = x.shape[0]
    fit = metrics.ppca_mle(x, linear.latent_dim, beta)
    weights, biases, variances = linear_parameters(model)
    covariance = weights @ weights.T + np.diag(variances)
    exact = float(np.sum(metrics.gaussian_log_likelihood(x, biases, covariance)))
    quirk = metrics.linear_gaussian_log_likelihood(x, weights, biases, fit.noise_var)
    true = metrics.linear_gaussian_log_likelihood(
        x, np.concatenate(linear.loadings), np.concatenate(linear.offsets), linear.noise_std**2
    )
    return {
        "exact_ll": exact / n,
        "exact_ll_reference_quirk": quirk / n,
        "mle_ll": fit.log_likelihood / n,
        "true_ll": true / n,
        "noise_var_mle": float(fit.noise_var),
    }


def evaluate(
    model: MultiModalVAE, data: ExperimentData, settings: ExperimentSettings
) -> dict[str, object]:
    model.eval()
    torch.manual_seed(settings.seed + 1)
    results: dict[str, object] = {}
    if settings.experiment == "linear-gaussian":
        results |= linear_metrics(model, data, settings.beta)
    estimates = objective_estimate(model, data.train, settings)
    results |= estimates
    if "exact_ll" in results:
        exact = float(results["exact_ll"])  # type: ignore[arg-type]
        mle = float(results["mle_ll"])  # type: ignore[arg-type]
        results["rel_model_gap"] = (mle - exact) / abs(mle)
        objective = estimates[objective_key(settings.objective)]
        results["rel_objective_gap"] = (exact - objective) / abs(exact)
        if "elbo" in estimates:
            results["rel_elbo_gap"] = (exact - estimates["elbo"]) / abs(exact)
    results["is_ll"], results["is_ll_se"] = is_log_likelihood(
        model, data.train, settings.is_samples, settings.batch_size
    )
    if settings.experiment == "ivae-bimodal":
        z = posterior_sample(model, data.train)
        results["mcc"] = mcc(data.sources_train, z, settings)  # type: ignore[arg-type]
    if settings.experiment == "ivae-multimodal":
        assert data.test is not None
        results["is_ll_test"], results["is_ll_test_se"] = is_log_likelihood(
            model, data.test, settings.is_samples, settings.batch_size
        )
        z = posterior_sample(model, data.test)
        results["mcc"] = mcc(data.sources_test, z, settings)  # type: ignore[arg-type]
        pairs: dict[str, object] = {}
        names = model.modality_names
        for a, b in itertools.combinations(range(len(names)), 2):
            mask = torch.zeros_like(data.test.avail)
            mask[:, [a, b]] = True
            subset = mask & data.test.avail
            empty_rows = int((~subset.any(1)).sum())
            z_pair = posterior_sample(model, data.test, mask)
            pairs[f"{names[a]}+{names[b]}"] = {
                **mcc(data.sources_test, z_pair, settings),  # type: ignore[arg-type]
                "rows_with_no_observed_modality": empty_rows,
            }
        results["mcc_pairs"] = pairs
    return results


@dataclass
class TrainedExperiment:
    """A trained model with its data and the training loop's timing and last terms."""

    model: MultiModalVAE
    data: ExperimentData
    training: dict[str, float]


def train_experiment(settings: ExperimentSettings, progress: bool = True) -> TrainedExperiment:
    """Generate data, build the model and train it (seeded by `settings.seed`)."""
    from mmtrain import ops

    settings.validate()
    ops.set_backend(settings.kernel_backend)
    torch.manual_seed(settings.seed)
    data = make_data(settings)
    model = build_model(settings, data)
    training = train_model(model, data.train, settings, progress)
    return TrainedExperiment(model, data, training)


def run_experiment(settings: ExperimentSettings, progress: bool = True) -> dict[str, object]:
    """Generate data, build the model, train, evaluate; return the JSON-ready result."""
    trained = train_experiment(settings, progress)
    model, training = trained.model, trained.training
    results = evaluate(model, trained.data, settings)
    return {
        **results,
        "steps": settings.steps,
        "seconds": training["seconds"],
        "steps_per_second": training["steps_per_second"],
        "nan_gradient_entries": training["nan_gradient_entries"],
        "train_terms": {k[6:]: v for k, v in training.items() if k.startswith("train_")},
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "settings": asdict(settings),
        "plugins": provenance(plugins_of(model)),
    }
