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
from mmtrain.schema import build, load_yaml


@dataclass
class PriorConfig:
    kind: Literal["fixed", "mixture"] = "fixed"
    components: int = 1
    family: Literal["normal", "laplace"] = "normal"


@dataclass
class BetaSchedule:
    """β warm-up (KL annealing, as in MoPoE and MultiVae): β(t) at optimiser step t rises
    from `start`·β at t = 0 to β at t = `warmup_steps` (`linear`, or along a half cosine),
    then stays at `model.beta`; `constant` keeps β throughout (`objectives.beta_at_step`).
    While β < 1 the objective is not a bound on log p(x) (docs/math.md §2.1)."""

    kind: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    start: float = 0.0


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
    beta_schedule: BetaSchedule = field(default_factory=BetaSchedule)
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
class KeepBest:
    """Keep `checkpoints/best/`: the checkpoint of the periodic validation (`train.eval_every`)
    with the best `metric` (a validation metric, `eval/…`; `val/…` is read as `eval/…`)."""

    metric: str = field(metadata={"doc": "a validation metric, e.g. eval/is_ll"})
    mode: Literal["max", "min"] = "max"


@dataclass
class EarlyStopping:
    """Stop when the validation `metric` has not improved by more than `min_delta` for
    `patience` evaluations in a row."""

    metric: str = field(metadata={"doc": "a validation metric, e.g. eval/is_ll"})
    patience: int = 5
    min_delta: float = 0.0
    mode: Literal["max", "min"] = "max"


@dataclass
class TrainSection:
    """Length, batch, precision, evaluation and checkpoint cadence; experiment trackers;
    kernels and compilation.

    `log_with`: the trackers (Accelerate's names: tensorboard, mlflow, wandb, …) that get
    every line of `metrics.jsonl` and the config; `[]` writes `metrics.jsonl` only.
    `tracker_project`: the MLflow experiment / W&B project (default: the run folder's name).
    `tracker_options`: per tracker, keyword arguments for its run (`Accelerator.init_trackers`).

    `compile` runs the training step's forward pass (model and objective) under
    `torch.compile`, so AOTAutograd compiles its backward too; evaluation stays eager.
    `compile_mode` is `torch.compile`'s mode (Inductor only); null means `reduce-overhead`
    (CUDA graphs) on CUDA and `default` elsewhere. `compile_backend` is the Dynamo backend:
    `inductor`, or `aot_eager` to trace forward and backward without generating code (to tell
    a tracing problem from a code-generation one).
    """

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
    keep_best: KeepBest | None = None
    early_stopping: EarlyStopping | None = None
    max_nan_steps: int = 20
    kernels: Literal["torch", "triton", "auto"] = "auto"
    cpu: bool = False
    log_with: list[str] = field(default_factory=lambda: ["tensorboard"])
    tracker_project: str | None = None
    tracker_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    compile: bool = False
    compile_mode: (
        Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None
    ) = None
    compile_backend: str = "inductor"


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
        _check_beta_schedule(self.model.beta_schedule)
        _check_monitoring(self)
        # A function-level import: `mmtrain.train` is a package whose loop imports this module.
        from mmtrain.train.trackers import check_trackers

        check_trackers(self.train)
        _check_compile(self.train)
        # The plugins say which combinations they can build; a function-level import, as the
        # factory imports this module.
        from mmtrain.factory import check_model

        check_model(self.model)
        return self


def _check_beta_schedule(schedule: BetaSchedule) -> None:
    where = "model.beta_schedule"
    if schedule.warmup_steps < 0:
        raise ConfigError(f"{where}.warmup_steps must be ≥ 0, got {schedule.warmup_steps}")
    if not 0.0 <= schedule.start <= 1.0:
        raise ConfigError(
            f"{where}.start is the fraction of model.beta at step 0 and must be in [0, 1], "
            f"got {schedule.start}"
        )
    if schedule.kind == "constant" and schedule.warmup_steps:
        raise ConfigError(
            f"{where}.warmup_steps has no effect with kind constant; set {where}.kind to "
            "linear or cosine"
        )
    if schedule.kind != "constant" and schedule.warmup_steps < 1:
        raise ConfigError(f"{where}.kind {schedule.kind} needs {where}.warmup_steps ≥ 1")


def _check_compile(train: TrainSection) -> None:
    if train.compile_mode is not None and not train.compile:
        raise ConfigError(
            f"train.compile_mode {train.compile_mode} has no effect without train.compile: true"
        )
    if not train.compile:
        return
    if train.compile_mode is not None and train.compile_backend != "inductor":
        raise ConfigError(
            f"train.compile_mode is an Inductor option; train.compile_backend is "
            f"{train.compile_backend}"
        )
    # Imported only here: Dynamo takes a second or two to import.
    import torch._dynamo

    backends = torch._dynamo.list_backends(exclude_tags=())
    if train.compile_backend not in backends:
        raise ConfigError(
            f"unknown train.compile_backend {train.compile_backend!r}; choose one of "
            f"{', '.join(sorted(backends))}"
        )


def _check_monitoring(config: TrainConfig) -> None:
    """train.keep_best and train.early_stopping: periodic validation is on, the metric is
    one the loop's validation reports (`val/…` is read as `eval/…`), the numbers are sane."""
    from mmtrain.train.monitor import canonical_metric, check_metric

    train = config.train
    for key, section in (("keep_best", train.keep_best), ("early_stopping", train.early_stopping)):
        if section is None:
            continue
        if not (train.eval_every and train.eval_split):
            raise ConfigError(
                f"train.{key} watches the periodic validation: set train.eval_every > 0 and "
                "train.eval_split"
            )
        section.metric = canonical_metric(section.metric)
        check_metric(section.metric, config.model.objective, f"train.{key}.metric")
    stopping = train.early_stopping
    if stopping is not None:
        if stopping.patience < 1:
            raise ConfigError(f"train.early_stopping.patience must be ≥ 1, got {stopping.patience}")
        if stopping.min_delta < 0:
            raise ConfigError(
                f"train.early_stopping.min_delta must be ≥ 0, got {stopping.min_delta}"
            )


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set expects key.path=value, got {text!r}")
    key, raw = text.split("=", 1)
    return key.strip().split("."), load_yaml(raw) if raw.strip() else None


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
            loaded = load_yaml(path.read_text())
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
