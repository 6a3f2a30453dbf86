"""Experiment trackers (`train.log_with`) through Accelerate's tracker API.

The loop hands Accelerate the names; Accelerate creates the trackers on the main process
and forwards every `accelerator.log` call. This module checks the names, says which package
a missing tracker needs, and decides where each tracker writes inside the run directory:
TensorBoard under `RUN/tensorboard/<project>`, an MLflow file store under `RUN/mlflow`
(unless `MLFLOW_TRACKING_URI` is set), W&B under `RUN/wandb` (unless `WANDB_DIR` or
`train.tracker_options.wandb.dir` is set).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmtrain.errors import ConfigError
from mmtrain.schema import check_choice

if TYPE_CHECKING:
    from mmtrain.config import TrainSection

#: the trackers Accelerate knows (`accelerate.utils.LoggerType` without "all", whose meaning
#: would depend on what happens to be installed); listed here so that checking a config does
#: not import Accelerate (tests compare the two)
KNOWN_TRACKERS = (
    "tensorboard",
    "mlflow",
    "wandb",
    "comet_ml",
    "aim",
    "clearml",
    "dvclive",
    "swanlab",
    "trackio",
)
#: what to install for each tracker; Accelerate only logs that a missing one is skipped
INSTALL_HINTS = {
    "mlflow": "pip install 'mmtrain[trackers]' (or mlflow-skinny)",
    "wandb": "pip install 'mmtrain[trackers]' (or wandb)",
    "tensorboard": "pip install tensorboard",
}
#: the subfolder of the run directory that holds TensorBoard's event files
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlflow"


def check_trackers(train: TrainSection) -> None:
    """`train.log_with` names known trackers, each once; `train.tracker_options` configures
    only trackers in `train.log_with`; `train.tracker_project` is not empty."""
    seen: set[str] = set()
    for index, name in enumerate(train.log_with):
        check_choice(name, KNOWN_TRACKERS, f"train.log_with[{index}]")
        if name in seen:
            raise ConfigError(f"train.log_with names {name!r} twice")
        seen.add(name)
    for name in train.tracker_options:
        if name not in seen:
            listed = ", ".join(train.log_with) or "nothing"
            raise ConfigError(
                f"train.tracker_options.{name}: {name!r} is not in train.log_with "
                f"(which lists {listed}); add it there or remove its options"
            )
    if train.tracker_project is not None and not train.tracker_project.strip():
        raise ConfigError("train.tracker_project must not be empty (null: the run folder's name)")


def check_installed(names: list[str]) -> None:
    """Raise `ConfigError` for a tracker of `names` whose package is missing (Accelerate
    would skip it with a debug message only)."""
    from accelerate.tracking import get_available_trackers

    available = {str(tracker) for tracker in get_available_trackers()}
    for name in names:
        if name not in available:
            hint = INSTALL_HINTS.get(name, f"pip install {name}")
            raise ConfigError(f"train.log_with: tracker {name!r} is not installed; {hint}")


def project_name(train: TrainSection, output: Path) -> str:
    """The tracker project (MLflow experiment, W&B project, TensorBoard subfolder)."""
    return train.tracker_project or output.resolve().name


def init_kwargs(
    train: TrainSection, output: Path, start_step: int, resumed: bool
) -> dict[str, dict[str, Any]]:
    """Per-tracker keyword arguments for `Accelerator.init_trackers`: the user's
    `train.tracker_options` over our defaults. Also points MLflow at a file store in the run
    directory when no tracking URI is set (Accelerate's MLflow tracker takes none)."""
    options = {name: dict(train.tracker_options.get(name, {})) for name in train.log_with}
    if "tensorboard" in options and resumed:
        # Events after the resumed step were logged by the interrupted run and are computed
        # again: TensorBoard drops them, as metrics.jsonl does.
        options["tensorboard"].setdefault("purge_step", start_step + 1)
    if "wandb" in options and "WANDB_DIR" not in os.environ:
        options["wandb"].setdefault("dir", str(output))
    if "mlflow" in options:
        _point_mlflow_at_run(output)
    return options


def _point_mlflow_at_run(output: Path) -> None:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return
    import mlflow

    # MLflow 3 keeps its file store in maintenance mode behind this switch; it needs no
    # database packages and is what a local run wants. A user's own setting wins.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri((output / MLFLOW_DIR).resolve().as_uri())


def flat_config(values: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """The run's config as `section.key` → scalar, the form every tracker accepts as
    hyper-parameters: lists and empty mappings as JSON text, None as "null"."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flat_config(value, f"{name}.")
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat
