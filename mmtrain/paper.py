"""The paper's simulated experiments as training configs.

`mmtrain experiment NAME` is the one training loop on a config from `configs/paper/`
(installed as `mmtrain.configs`), followed by the experiment's metrics:

    configs/paper/NAME.yaml + the command's flags   → TrainConfig
      → mmtrain.train.train (the data held in memory: `data.in_memory`)
      → mmtrain.evaluation.simulated.experiment_metrics (exact LL and PPCA, or MCC)

The flags are config overrides; the only rule beyond them is the linear-Gaussian model's
latent size, 5 (M + 1) for M modalities, with features of size 2 · latent for every
aggregator, as in the authors' script.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmtrain.config import TrainConfig, apply_overrides, config_from_dict
from mmtrain.errors import ConfigError
from mmtrain.registry import AGGREGATORS
from mmtrain.schema import load_yaml

if TYPE_CHECKING:
    from mmtrain.batch import Batch
    from mmtrain.model import MultiModalVAE

EXPERIMENTS = ("linear-gaussian", "ivae-bimodal", "ivae-multimodal")

#: latent block size of the linear-Gaussian generator (private blocks and the shared one)
LINEAR_BLOCK = 5


def config_path(name: str) -> Path:
    """The shipped YAML of experiment `name` (`configs/paper/NAME.yaml`)."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    return Path(str(resources.files("mmtrain.configs") / "paper" / f"{name}.yaml"))


@dataclass
class ExperimentOptions:
    """The `mmtrain experiment` flags; None keeps the config's value."""

    aggregator: str | None = None
    objective: str | None = None
    steps: int | None = None
    modalities: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    lr: float | None = None
    components: int | None = None
    is_samples: int | None = None
    samples: int | None = None
    beta: float | None = None
    subset_mode: str | None = None
    gradient_mode: str | None = None
    poe_reference_bug: bool | None = None
    clean_data: bool | None = None
    num_examples: int | None = None
    kernels: str | None = None
    compile: bool | None = None
    init: str | None = None
    output_dir: str | None = None

    def overrides(self, name: str) -> list[str]:
        """The `key.path=value` overrides these flags stand for."""
        values: dict[str, Any] = {
            "model.aggregator": self.aggregator,
            "model.objective": self.objective,
            "train.steps": self.steps,
            "data.batch_size": self.batch_size,
            "optim.lr": self.lr,
            "train.eval_is_samples": self.is_samples,
            "model.samples": self.samples,
            "model.beta": self.beta,
            "model.subset_mode": self.subset_mode,
            "optim.gradient.mode": self.gradient_mode,
            "data.options.num_examples": self.num_examples,
            "train.kernels": self.kernels,
            "train.compile": self.compile,
            "model.init": self.init,
            "output_dir": self.output_dir,
        }
        if self.poe_reference_bug:
            values["model.aggregator_options.poe_reference_bug"] = True
        if self.clean_data:
            values["data.options.faithful"] = False
        if self.seed is not None:
            for key in ("seed", "data.seed", "data.options.seed"):
                values[key] = self.seed
        if self.components is not None:
            values["model.prior.components"] = self.components
            values["model.prior.kind"] = "fixed" if self.components == 1 else "mixture"
        if self.modalities is not None:
            values |= modality_overrides(name, self.modalities)
        return [f"{key}={json.dumps(value)}" for key, value in values.items() if value is not None]


def modality_overrides(name: str, modalities: int) -> dict[str, Any]:
    """What changing the number of modalities means for each experiment."""
    if modalities < 1:
        raise ConfigError(f"--modalities must be at least 1, got {modalities}")
    if name == "linear-gaussian":
        latent = LINEAR_BLOCK * (modalities + 1)
        return {
            "data.options.num_modalities": modalities,
            "model.latent_dim": latent,
            "model.feature_dim": 2 * latent,
        }
    if name == "ivae-multimodal":
        return {"data.options.num_modalities": modalities}
    if modalities != 2:
        raise ConfigError("ivae-bimodal has exactly two modalities (u and x)")
    return {}


def experiment_config(
    name: str, options: ExperimentOptions | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """The config of experiment `name`: its YAML, then the flags, then `--set` overrides."""
    data = load_yaml(config_path(name).read_text())
    flags = (options or ExperimentOptions()).overrides(name)
    data = apply_overrides(data, [*flags, *(overrides or [])])
    if options is not None and options.output_dir is None:
        model = data.get("model", {})
        data["output_dir"] = str(
            Path(data.get("output_dir", f"runs/experiment/{name}"))
            / f"{model.get('aggregator')}-{model.get('objective')}-seed{data.get('seed')}"
        )
    return config_from_dict(data)


def run_experiment(
    name: str, config: TrainConfig, progress: bool = True, overwrite: bool = True
) -> dict[str, Any]:
    """Train `config` with the one training loop, then compute the experiment's metrics on
    its data; return the JSON-ready result. A previous run in the same output directory is
    moved aside (`overwrite`)."""
    from mmtrain.bundle import load
    from mmtrain.evaluation.simulated import experiment_metrics
    from mmtrain.registry import provenance
    from mmtrain.train.loop import train

    training = train(config, progress=progress, overwrite=overwrite)
    model = load(training["checkpoint"])
    splits = experiment_splits(config)
    results = experiment_metrics(model, config, splits)
    if name == "linear-gaussian":
        results["true_ll"] = true_linear_log_likelihood(config, splits["train"], model)
    steps = int(training["steps"])
    seconds = float(training["seconds"])
    return {
        **results,
        "steps": steps,
        "seconds": seconds,
        "steps_per_second": steps / seconds if seconds else float("nan"),
        "nan_skipped_steps": training["nan_skipped_steps"],
        "train_terms": {
            key.removeprefix("train/"): value
            for key, value in training.items()
            if key.startswith("train/")
        },
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "settings": settings_summary(name, config),
        "config": config.to_dict(),
        "output_dir": training["output_dir"],
        "plugins": provenance(
            {
                "modality": sorted({m.kind for m in model.modalities.values() if m.kind}),
                "aggregator": [config.model.aggregator],
                "objective": [config.model.objective],
            }
        ),
    }


def experiment_splits(config: TrainConfig) -> dict[str, Batch]:
    """The experiment's rows in memory, read through the data layer: the training split,
    and the test split when the dataset has one."""
    from mmtrain.evaluation.data import load_split, split_exists

    splits = {"train": load_split(config.data, "train", None, config.seed).batch}
    if split_exists(config.data, "test"):
        splits["test"] = load_split(config.data, "test", None, config.seed).batch
    return splits


def true_linear_log_likelihood(config: TrainConfig, data: Batch, model: MultiModalVAE) -> float:
    """Per-example log-likelihood of the rows under the generating linear model (its W, b
    and noise variance), regenerated from the embedded dataset's options."""
    import numpy as np

    from mmtrain import metrics, simulations
    from mmtrain.data.embedded import get_embedded

    options = get_embedded("linear-gaussian").resolve_options(config.data.options)
    truth = simulations.make_linear_gaussian(
        num_modalities=options["num_modalities"],
        num_examples=options["num_examples"],
        noise_std=options["noise_std"],
        seed=options["seed"],
    )
    x = np.concatenate([data.x[name].double().numpy() for name in model.modality_names], 1)
    total = metrics.linear_gaussian_log_likelihood(
        x, np.concatenate(truth.loadings), np.concatenate(truth.offsets), truth.noise_std**2
    )
    return float(total) / x.shape[0]


def settings_summary(name: str, config: TrainConfig) -> dict[str, Any]:
    """The handful of settings a results table names."""
    options = config.data.options
    return {
        "experiment": name,
        "aggregator": config.model.aggregator,
        "aggregator_options": dict(config.model.aggregator_options),
        "objective": config.model.objective,
        "modalities": options.get("num_modalities"),
        "steps": config.train.steps,
        "batch_size": config.data.batch_size,
        "seed": config.seed,
        "lr": config.optim.lr,
        "components": config.model.prior.components,
        "init": config.model.init,
        "is_samples": config.train.eval_is_samples,
        "subset_mode": config.model.subset_mode,
        "poe_reference_bug": bool(config.model.aggregator_options.get("poe_reference_bug")),
        "options_line": AGGREGATORS.get(config.model.aggregator).describe_options(
            dict(config.model.aggregator_options)
        ),
        "faithful_data": options.get("faithful", True),
    }
