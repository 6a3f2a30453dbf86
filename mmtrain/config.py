"""Typed, validated configuration for `mmtrain train`.

A YAML file (plus `--set key.path=value` overrides) becomes a `TrainConfig` of nested
dataclasses. Unknown keys fail with the closest valid key; wrong types and out-of-range
values fail with the key path and what was expected.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mmtrain.data.config import DataConfig
from mmtrain.errors import ConfigError
from mmtrain.schema import build


@dataclass
class PriorConfig:
    kind: Literal["fixed", "mixture"] = "fixed"
    components: int = 1
    family: Literal["normal", "laplace"] = "normal"


@dataclass
class ModelSection:
    """The VAE: aggregator, objective, latent size, prior, β and importance samples.

    `init`: `flax` (default) gives every network LeCun-normal weights and zero biases, as
    the paper's Flax code; `torch` keeps PyTorch's layer defaults (`mmtrain.nets.initialise`).
    """

    aggregator: str = "sum_pooling"
    aggregator_options: dict[str, Any] = field(default_factory=dict)
    aggregator_width: int | None = None
    objective: str = "masked"
    latent_dim: int = 20
    feature_dim: int = 128
    prior: PriorConfig = field(default_factory=PriorConfig)
    beta: float = 1.0
    samples: int = 1
    stl: bool = True
    subset_mode: Literal["faithful", "uniform-size"] = "faithful"
    min_scale: float = 5e-4
    posterior_family: Literal["normal", "laplace"] = "normal"
    reconstruction_weights: dict[str, float] = field(default_factory=dict)
    init: Literal["flax", "torch"] = "flax"


@dataclass
class GradientConfig:
    """`elementwise`: the paper's NaN→0 then elementwise clip; `norm`: global norm clip."""

    mode: Literal["elementwise", "norm", "none"] = "elementwise"
    clip: float = 1000.0


@dataclass
class OptimizerSection:
    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    min_lr_ratio: float = 0.0
    gradient: GradientConfig = field(default_factory=GradientConfig)


@dataclass
class TrainSection:
    """Length, batch, precision, evaluation and checkpoint cadence."""

    steps: int | None = 1000
    epochs: int | None = None
    grad_accum: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    log_every: int = 10
    eval_every: int = 0
    eval_batches: int = 4
    eval_split: str | None = "test"
    eval_is_samples: int = 16
    checkpoint_every: int = 0
    keep_last: int = 3
    max_nan_steps: int = 20
    kernels: Literal["torch", "triton", "auto"] = "auto"
    cpu: bool = False


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=lambda: DataConfig("digits"))
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimizerSection = field(default_factory=OptimizerSection)
    train: TrainSection = field(default_factory=TrainSection)
    seed: int = 0
    output_dir: str = "runs/default"

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("model", "optim", "train"):
            out[name] = dataclasses.asdict(out[name])
        out["data"] = self.data.to_dict()
        return out

    def validate(self) -> TrainConfig:
        checks: list[tuple[bool, str]] = [
            (self.optim.lr > 0, f"optim.lr must be positive, got {self.optim.lr}"),
            (
                self.train.grad_accum >= 1,
                f"train.grad_accum must be ≥ 1, got {self.train.grad_accum}",
            ),
            (
                self.model.latent_dim >= 1,
                f"model.latent_dim must be ≥ 1, got {self.model.latent_dim}",
            ),
            (
                self.model.feature_dim >= 1,
                f"model.feature_dim must be ≥ 1, got {self.model.feature_dim}",
            ),
            (self.model.samples >= 1, f"model.samples must be ≥ 1, got {self.model.samples}"),
            (self.model.beta >= 0, f"model.beta must be ≥ 0, got {self.model.beta}"),
            (self.model.prior.components >= 1, "model.prior.components must be ≥ 1"),
            (self.optim.gradient.clip > 0, "optim.gradient.clip must be positive"),
            (self.optim.warmup_steps >= 0, "optim.warmup_steps must be ≥ 0"),
            (self.train.keep_last >= 1, f"train.keep_last must be ≥ 1, got {self.train.keep_last}"),
            (self.train.max_nan_steps >= 1, "train.max_nan_steps must be ≥ 1"),
            (self.train.eval_is_samples >= 1, "train.eval_is_samples must be ≥ 1"),
            (self.train.log_every >= 1, "train.log_every must be ≥ 1"),
            (self.train.eval_every >= 0, "train.eval_every must be ≥ 0 (0: never)"),
            (self.train.checkpoint_every >= 0, "train.checkpoint_every must be ≥ 0 (0: at end)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if (self.train.steps is None) == (self.train.epochs is None):
            raise ConfigError("set exactly one of train.steps and train.epochs (the other to null)")
        length = self.train.steps if self.train.steps is not None else self.train.epochs
        if length is not None and length < 1:
            raise ConfigError(f"train.steps / train.epochs must be ≥ 1, got {length}")
        if self.model.prior.kind == "fixed" and self.model.prior.components != 1:
            raise ConfigError("a fixed prior has one component; use model.prior.kind: mixture")
        # The plugins say which combinations they can build; a function-level import, as the
        # factory imports this module.
        from mmtrain.factory import check_model

        check_model(self.model)
        return self


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set expects key.path=value, got {text!r}")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = _parse_override(text)
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: {key!r} is not a section")
            node = child
        node[keys[-1]] = value
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read YAML, apply `key.path=value` overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping at the top level")
        data = loaded or {}
    data = apply_overrides(data, overrides or [])
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A validated `TrainConfig` from a mapping (`mmtrain.schema` checks keys and types)."""
    return build(TrainConfig, data).validate()
