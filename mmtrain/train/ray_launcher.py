"""Run the one training loop on Ray Train workers: `mmtrain train CONFIG --ray ...`.

The driver (`run_with_ray`) connects to a Ray cluster (or starts a local one and stops it
afterwards), then hands `train_loop_per_worker` to Ray Train's `TorchTrainer`:

    ScalingConfig(num_workers, use_gpu, resources_per_worker)   one worker per process
    RunConfig(storage_path, CheckpointConfig, FailureConfig)    where Ray keeps checkpoints
    fit()                                                       → rank 0's result

On every worker Ray has already set `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR/PORT`
and initialised the process group (gloo on CPUs, NCCL on GPUs); the loop's `Accelerator`
reads the same environment, so `accelerator.num_processes == num_workers`. Ray's
`prepare_model` is never called: the loop's Accelerator wraps the model in DDP itself.

Checkpoints: rank 0 writes each one with `mmtrain.checkpoint` under `output_dir/checkpoints`
and reports it with `ray.train.report`, which copies it to the storage path. When a worker
dies, Ray restarts the whole group (up to `--max-failures` times) and every worker resumes
from `ray.train.get_checkpoint()`, the last reported checkpoint, exactly as `--resume` does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmtrain.config import TrainConfig, config_from_dict
from mmtrain.errors import ConfigError, MMTrainError
from mmtrain.train import rundir

if TYPE_CHECKING:
    from ray.train import Result
    from ray.train.torch import TorchTrainer

logger = logging.getLogger(__name__)

#: environment variables the driver forwards to the workers when they are set
FORWARDED_ENV = (
    "MMTRAIN_HOME",
    "MMTRAIN_KERNELS",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRITON_INTERPRET",
)

#: each worker records where it runs (rank, node, pid) in `<output_dir>/ray-workers/`
WORKER_FILES_DIR = "ray-workers"
#: the driver writes the run's result (with `workers` and `ray` paths) here
RESULT_FILE = "ray_result.json"


class RayTrainingFailed(MMTrainError):
    """Ray Train gave up: a worker kept failing after `--max-failures` restarts."""


# ----------------------------------------------------------------------------- driver


def _is_uri(path: str) -> bool:
    return "://" in path


def storage_path(config: TrainConfig, storage: str | None) -> str:
    """Where Ray keeps reported checkpoints: `--storage` (a path or a URI such as
    `s3://bucket/runs`), else `<output_dir>/ray`. Local paths are made absolute."""
    if storage and _is_uri(storage):
        return storage
    return str(Path(storage or Path(config.output_dir) / "ray").expanduser().resolve())


def worker_resources(args: argparse.Namespace) -> dict[str, float]:
    """`{"CPU": c, "GPU": g, **extra}` from `--cpus-per-worker`, `--gpus-per-worker` and the
    JSON of `--resources-per-worker`."""
    extra: dict[str, Any] = {}
    if getattr(args, "resources_per_worker", None):
        try:
            extra = json.loads(args.resources_per_worker)
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"--resources-per-worker must be a JSON object, e.g. '{{\"node_slot\": 1}}': "
                f"{error}"
            ) from None
        if not isinstance(extra, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in extra.values()
        ):
            raise ConfigError(
                f"--resources-per-worker must map resource names to numbers, got {extra!r}"
            )
        for key in ("CPU", "GPU"):
            if key in extra:
                raise ConfigError(
                    f"--resources-per-worker: set {key} with --{key.lower()}s-per-worker"
                )
    cpus, gpus = float(args.cpus_per_worker), float(args.gpus_per_worker)
    if cpus < 0 or gpus < 0:
        raise ConfigError("--cpus-per-worker and --gpus-per-worker must be ≥ 0")
    resources = {"CPU": cpus, **{k: float(v) for k, v in extra.items()}}
    if gpus > 0:
        resources["GPU"] = gpus
    return resources


def resolved_config(config: TrainConfig) -> dict[str, Any]:
    """The config as workers get it: `output_dir`, and a `data.source` that names local
    files relative to the driver's working directory, made absolute (Ray workers run in a
    directory of their own)."""
    data = config.to_dict()
    data["output_dir"] = str(Path(config.output_dir).expanduser().resolve())
    source = Path(str(data["data"]["source"])).expanduser()
    if not source.is_absolute() and (source.exists() or any(Path().glob(str(source)))):
        data["data"]["source"] = str(source.resolve())
    return data


def _worker_env() -> dict[str, str]:
    return {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}


def run_with_ray(config: TrainConfig, args: argparse.Namespace) -> dict[str, Any]:
    """Train `config` on `args.num_workers` Ray Train workers; rank 0's result, plus
    `is_main`, `workers` (where each rank ran) and `ray` (storage and checkpoint paths)."""
    import ray

    if args.num_workers < 1:
        raise ConfigError(f"--num-workers must be ≥ 1, got {args.num_workers}")
    resources = worker_resources(args)
    resume = str(args.resume) if getattr(args, "resume", None) else None
    output = Path(resolved_config(config)["output_dir"])
    # Checked here, before Ray starts: the workers must not move the folder that holds
    # Ray's own storage (`output_dir/ray` by default).
    moved = rundir.check_or_move_aside(output, resume, bool(getattr(args, "overwrite", False)))
    if moved is not None:
        logger.info(f"--overwrite: moved the previous run in {output} to {moved}")
    # A fresh name per invocation: Ray Train resumes a run whose name it finds in storage.
    name = f"{output.name or 'mmtrain'}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=cluster_address(args.address), logging_level="warning")
    try:
        if started_here and not args.address and not os.environ.get("RAY_ADDRESS"):
            _check_local_capacity(ray.cluster_resources(), resources, args.num_workers)
        trainer = build_trainer(
            config,
            name=name,
            storage=storage_path(config, args.storage),
            num_workers=args.num_workers,
            resources=resources,
            max_failures=args.max_failures,
            resume=resume,
            quiet=args.quiet,
        )
        result = _fit(trainer, args.max_failures, name, output)
    finally:
        if started_here:
            ray.shutdown()
    return _write_result(result, name, output)


def build_trainer(
    config: TrainConfig,
    *,
    name: str,
    storage: str,
    num_workers: int,
    resources: dict[str, float],
    max_failures: int,
    resume: str | None = None,
    quiet: bool = False,
    callbacks: list[Any] | None = None,
) -> TorchTrainer:
    """The `TorchTrainer` that runs `train_loop_per_worker` on `num_workers` workers, its
    checkpoints under `storage/name`. A name Ray Train finds in `storage` is continued from
    its last registered checkpoint (`mmtrain sweep --resume` relies on it); `callbacks` are
    Ray Train's (a sweep's trial passes Ray Tune's `TuneReportCallback`)."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    # The run id lets a worker group that Ray restarts before the first checkpoint start
    # over in the folder its first attempt wrote, which would otherwise look like another run.
    loop_config = {"config": resolved_config(config), "resume": resume, "run_id": name}
    run_config = RunConfig(
        name=name,
        storage_path=storage,
        checkpoint_config=CheckpointConfig(num_to_keep=config.train.keep_last),
        failure_config=FailureConfig(max_failures=max_failures),
        worker_runtime_env={"env_vars": _worker_env()},
        # Ray logs every report with its metrics at INFO; --quiet keeps warnings only.
        logging_config=LoggingConfig(log_level="WARNING" if quiet else "INFO"),
        callbacks=callbacks,
    )
    scaling = ScalingConfig(
        num_workers=num_workers,
        use_gpu=resources.get("GPU", 0) > 0,
        resources_per_worker=resources,
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=scaling,
        run_config=run_config,
    )


def _fit(trainer: TorchTrainer, max_failures: int, name: str, output: Path) -> Result:
    """`trainer.fit()`, with a failure summarised (`RayTrainingFailed`) and Ctrl-C turned
    into `TrainingInterrupted` at the newest checkpoint."""
    import ray

    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as error:
        raise RayTrainingFailed(_failure_summary(error, max_failures, name)) from error
    except (KeyboardInterrupt, SystemExit):
        # Ctrl-C: Ray Train's own SIGINT handler aborts the workers, and the blocked
        # ray.get in fit() ends in SystemExit(1). The checkpoints written so far are
        # complete (written atomically): the run continues from the newest.
        from mmtrain.checkpoint import list_checkpoints, read_state
        from mmtrain.train.loop import TrainingInterrupted

        found = list_checkpoints(output / "checkpoints")
        step = int(read_state(found[-1])["step"]) if found else 0
        raise TrainingInterrupted(step, found[-1] if found else None) from None


def _write_result(result: Result, name: str, output: Path) -> dict[str, Any]:
    """Rank 0's result with `is_main` and `ray`, also written to `output`/RESULT_FILE."""
    out = dict(result.return_value or {})
    out["is_main"] = True
    out["ray"] = {
        "name": name,
        "path": result.path,
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / RESULT_FILE).write_text(json.dumps(out, indent=1, default=str))
    return out


def cluster_address(address: str | None) -> str:
    """`--address`, else `$RAY_ADDRESS` (set inside `ray job submit`), else a new local
    cluster. Unlike a bare `ray.init()`, no address never attaches to whatever cluster
    `ray start` left on this machine: say `--address auto` for that."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def _check_local_capacity(
    available: dict[str, float], per_worker: dict[str, float], workers: int
) -> None:
    """Fail fast when a local cluster can never place the workers (Ray would wait forever)."""
    for key, amount in per_worker.items():
        need, have = amount * workers, available.get(key, 0.0)
        if need > have + 1e-9:
            hint = " (fractions are allowed, e.g. --cpus-per-worker 0.5)" if key == "CPU" else ""
            raise ConfigError(
                f"{workers} Ray workers need {need:g} {key} but this machine's local Ray "
                f"cluster has {have:g}{hint}"
            )


def _failure_summary(error: Exception, max_failures: int, name: str) -> str:
    failures = getattr(error, "worker_failures", None) or {}
    if failures:
        rank, cause = sorted(failures.items())[0]
        lines = [line for line in str(cause).strip().splitlines() if line.strip()]
        detail = f"rank {rank}: {lines[-1] if lines else type(cause).__name__}"
    else:
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        detail = lines[-1] if lines else type(error).__name__
    return f"Ray Train run {name} failed (--max-failures {max_failures}); {detail}"


# ----------------------------------------------------------------------------- worker


def _placement() -> dict[str, Any]:
    """Where this worker runs: rank, Ray node id, host name, process id, torch threads
    (Ray sets OMP_NUM_THREADS from the worker's CPUs)."""
    import ray
    import ray.train
    import torch

    context = ray.train.get_context()
    return {
        "rank": context.get_world_rank(),
        "local_rank": context.get_local_rank(),
        "node_rank": context.get_node_rank(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
    }


def _gather(value: Any) -> list[Any]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """What each Ray Train worker runs: rebuild the config, resume from Ray's latest
    checkpoint (after a restart) or from `--resume`, and run `mmtrain.train.loop.train`
    with a reporter that hands each checkpoint to `ray.train.report`."""
    import ray.train
    from ray.train import Checkpoint

    from mmtrain.checkpoint import read_state
    from mmtrain.train.loop import train

    config = config_from_dict(loop_config["config"])
    placement = _placement()
    rank = placement["rank"]
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    workers_dir = output / WORKER_FILES_DIR
    workers_dir.mkdir(exist_ok=True)
    (workers_dir / f"rank-{rank}.json").write_text(json.dumps(placement))

    def reporter(metrics: dict[str, float], directory: Path | None) -> None:
        # Ray copies the directory to storage; the loop's own copy stays (keep_last prunes it).
        checkpoint = Checkpoint.from_directory(str(directory)) if directory else None
        ray.train.report(metrics, checkpoint=checkpoint, delete_local_checkpoint_after_upload=False)

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as path:
            resumed_from = int(read_state(Path(path))["step"])
            result = train(
                config,
                resume=path,
                reporter=reporter,
                progress=False,
                run_id=loop_config.get("run_id"),
            )
    else:
        resumed_from = None
        result = train(
            config,
            resume=loop_config.get("resume"),
            reporter=reporter,
            progress=False,
            run_id=loop_config.get("run_id"),
        )
    result["resumed_from_ray_checkpoint"] = resumed_from
    result["workers"] = sorted(_gather(placement), key=lambda p: p["rank"])
    return result
