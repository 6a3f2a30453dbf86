"""`train.log_with`: experiment trackers through Accelerate. Each tracker's own files are read
back (TensorBoard's event files, MLflow's file store, the W&B offline run's transaction log)
and compared with the run's `metrics.jsonl` and `config.json`; nothing contacts a server."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mmtrain.cli import main
from mmtrain.errors import ConfigError
from mmtrain.train.loop import train
from mmtrain.train.trackers import KNOWN_TRACKERS
from tests.helpers import TINY_TRAIN_CONFIG, tiny_config

#: 8 steps, a log line every 4 and a validation at steps 4 and 8 (two lines at one step)
SHORT = ("train.steps=8", "train.eval_every=4", "train.eval_split=train")


def jsonl_by_step(run: Path) -> dict[int, dict[str, float]]:
    """`metrics.jsonl` as step → every value logged at that step."""
    merged: dict[int, dict[str, float]] = defaultdict(dict)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        values = json.loads(line)
        merged[values.pop("step")].update(values)
    return dict(merged)


def jsonl_series(run: Path) -> dict[str, list[tuple[int, float]]]:
    """`metrics.jsonl` as key → [(step, value), ...]."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for step, values in sorted(jsonl_by_step(run).items()):
        for key, value in values.items():
            series[key].append((step, value))
    return dict(series)


def flattened_config(run: Path) -> dict[str, Any]:
    """`config.json` as `section.key` → value; lists, None and empty mappings as JSON text."""
    flat: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, bool | int | float | str):
                flat[prefix + key] = value
            else:
                flat[prefix + key] = json.dumps(value)

    walk(json.loads((run / "config.json").read_text()), "")
    return flat


def approx_series(series: dict[str, list[tuple[int, float]]], rel: float) -> Any:
    return {
        key: [(step, pytest.approx(value, rel=rel)) for step, value in points]
        for key, points in series.items()
    }


# ----------------------------------------------------------------------------- config


def test_known_trackers_are_accelerates() -> None:
    from accelerate.utils import LoggerType

    assert set(KNOWN_TRACKERS) == {t.value for t in LoggerType} - {"all"}


@pytest.mark.parametrize(
    "override,needle",
    [
        ("train.log_with=[mlflw]", "train.log_with[0] must be one of"),
        ("train.log_with=[tensorboard, wandbb]", "did you mean 'wandb'"),
        ("train.log_with=[all]", "train.log_with[0] must be one of"),
        ("train.log_with=[mlflow, mlflow]", "names 'mlflow' twice"),
        ("train.log_with=mlflow", "train.log_with must be a list"),
        ("train.tracker_options={wandb: {mode: offline}}", "'wandb' is not in train.log_with"),
        ("train.tracker_project=''", "train.tracker_project must not be empty"),
    ],
)
def test_bad_tracker_settings_are_config_errors(tmp_path: Path, override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as error:
        tiny_config(tmp_path, override)
    assert needle in str(error.value)


def test_cli_refuses_an_unknown_tracker_with_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_TRAIN_CONFIG)
    argv = ["train", str(config), "--set", f"output_dir={tmp_path / 'run'}"]
    assert main([*argv, "--set", "train.log_with=[mlfow]", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "train.log_with[0] must be one of" in err and "did you mean 'mlflow'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_tracker_that_is_not_installed_is_refused_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("accelerate.tracking.get_available_trackers", lambda: [])
    config = tiny_config(tmp_path, "train.log_with=[mlflow]")
    with pytest.raises(ConfigError, match=r"'mlflow' is not installed; pip install 'mmtrain\["):
        train(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_empty_log_with_writes_only_the_jsonl(tmp_path: Path) -> None:
    train(tiny_config(tmp_path, "train.steps=4", "train.log_with=[]"), progress=False)
    run = tmp_path / "run"
    assert (run / "metrics.jsonl").read_text().strip()
    assert not (run / "tensorboard").exists()


# ----------------------------------------------------------------------------- TensorBoard


def tensorboard_series(directory: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_tensorboard_is_the_default_and_keeps_each_step_once_after_resume(tmp_path: Path) -> None:
    """A run to step 8, resumed from its step-4 checkpoint to step 12: TensorBoard purges
    what the first run logged after step 4, so its events equal the cut `metrics.jsonl`."""
    config = tiny_config(tmp_path, *SHORT)
    assert config.train.log_with == ["tensorboard"]
    train(config, progress=False)
    run = tmp_path / "run"
    resumed = tiny_config(tmp_path, "train.steps=12", *SHORT[1:])
    train(resumed, resume=run / "checkpoints" / "step-00000004", progress=False)
    events = tensorboard_series(run / "tensorboard" / "run")
    expected = jsonl_series(run)
    assert [step for step, _ in expected["train/loss"]] == [4, 8, 12]
    # TensorBoard stores float32
    assert events == approx_series(expected, rel=1e-6)


# ----------------------------------------------------------------------------- MLflow


@pytest.fixture
def mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_TAGS"):
        monkeypatch.delenv(name, raising=False)


def test_mlflow_file_store_holds_the_jsonl_metrics_and_the_config(
    tmp_path: Path, mlflow_env: None
) -> None:
    """Through the command line, as a user would ask for it."""
    from mlflow.tracking import MlflowClient

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_TRAIN_CONFIG)
    run = tmp_path / "run"
    overrides = [
        f"output_dir={run}",
        *SHORT,
        "train.log_with=[mlflow]",
        "train.tracker_project=tiny",
    ]
    assert main(["train", str(config), *(f"--set={o}" for o in overrides), "--quiet"]) == 0
    client = MlflowClient(tracking_uri=(run / "mlflow").as_uri())
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    (record,) = client.search_runs([experiment.experiment_id])
    assert record.info.status == "FINISHED"
    expected = jsonl_series(run)
    assert set(record.data.metrics) == set(expected)
    logged = {
        key: sorted((m.step, m.value) for m in client.get_metric_history(record.info.run_id, key))
        for key in expected
    }
    assert logged == approx_series(expected, rel=1e-12)
    assert record.data.params == {k: str(v) for k, v in flattened_config(run).items()}


def test_mlflow_resumed_run_is_a_second_run_of_the_experiment(
    tmp_path: Path, mlflow_env: None
) -> None:
    from mlflow.tracking import MlflowClient

    base = (*SHORT[1:], "train.log_with=[mlflow, tensorboard]")
    train(tiny_config(tmp_path, "train.steps=8", *base), progress=False)
    run = tmp_path / "run"
    train(tiny_config(tmp_path, "train.steps=12", *base), resume="latest", progress=False)
    client = MlflowClient(tracking_uri=(run / "mlflow").as_uri())
    experiment = client.get_experiment_by_name("run")
    records = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])
    assert len(records) == 2
    losses = [
        [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")] for r in records
    ]
    assert sorted(losses) == [[4, 8], [12]]


# ----------------------------------------------------------------------------- W&B


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a W&B transaction log (`run-ID.wandb`): a 7-byte W&B header, then
    LevelDB's log format (32 KiB blocks of checksum, length, type, data), each record a
    `wandb_internal_pb2.Record`."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        kind = data[position + 6]
        if kind == 0:
            break
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_wandb_log(path: Path) -> tuple[dict[int, dict[str, float]], dict[str, Any], str | None]:
    """The history rows by step, the config and the project recorded in a W&B log."""
    history: dict[int, dict[str, float]] = {}
    config: dict[str, Any] = {}
    project = None
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            values = {_item_key(i): json.loads(i.value_json) for i in record.history.item}
            kept = {k: v for k, v in values.items() if not k.startswith("_")}
            history.setdefault(record.history.step.num, {}).update(kept)
        elif kind in ("run", "config"):
            update = record.run.config.update if kind == "run" else record.config.update
            config |= {_item_key(i): json.loads(i.value_json) for i in update}
            project = record.run.project if kind == "run" else project
    return history, config, project


def _item_key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def test_wandb_offline_run_holds_the_jsonl_metrics_and_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    home = tmp_path / "wandb-home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))
    for name in ("WANDB_DIR", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)

    train(tiny_config(tmp_path, *SHORT, "train.log_with=[wandb]"), progress=False)
    run = tmp_path / "run"
    (log,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    expected = jsonl_by_step(run)
    # W&B's service process writes the log behind the run: on a loaded machine the last
    # history row can land after `finish()` has returned. Wait for it (a row that never
    # lands still fails below).
    deadline = time.monotonic() + 60
    while True:
        history, config, project = read_wandb_log(log)
        if sorted(history) == sorted(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert project == "run", [r.WhichOneof("record_type") for r in wandb_records(log)]
    assert sorted(history) == sorted(expected) == [4, 8]
    for step, values in expected.items():
        assert history[step] == {k: pytest.approx(v, rel=1e-12) for k, v in values.items()}
    config.pop("_wandb", None)
    assert config == flattened_config(run)
