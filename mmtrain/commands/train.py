"""`mmtrain train CONFIG.yaml [--set key=value ...] [--resume PATH|latest] [--ray ...]`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

#: options that do not carry over into the command that resumes a run
_NOT_RESUMED = {"--resume": 1, "--overwrite": 0}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML config (one process, accelerate launch, or Ray)",
        description="Train from a YAML config. Under `accelerate launch -m mmtrain train` the "
        "same loop runs on every process; with --ray, Ray Train runs it on N workers.",
    )
    p.add_argument("config", type=Path, help="YAML config (see configs/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=3e-4 (repeatable)",
    )
    p.add_argument("--resume", metavar="PATH|latest", help="continue from a checkpoint")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="output_dir holds another run: move it aside to OUTPUT_DIR.previous-<time> and "
        "start afresh (without this flag, or --resume, such a run is refused)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    ray = p.add_argument_group("Ray")
    ray.add_argument("--ray", action="store_true", help="run with Ray Train's TorchTrainer")
    ray.add_argument("--address", help="Ray cluster address (default: start a local one)")
    ray.add_argument("--num-workers", type=int, default=1)
    ray.add_argument("--gpus-per-worker", type=float, default=0.0)
    ray.add_argument("--cpus-per-worker", type=float, default=1.0)
    ray.add_argument("--storage", help="Ray storage path for checkpoints and results")
    ray.add_argument("--max-failures", type=int, default=2, help="worker-group restarts")
    ray.add_argument(
        "--resources-per-worker",
        default=None,
        help='extra Ray resources per worker as JSON, e.g. {"node_slot": 1}',
    )


def run(args: argparse.Namespace) -> int:
    from mmtrain.config import load_config
    from mmtrain.report import training_summary
    from mmtrain.train.loop import TrainingInterrupted

    config = load_config(args.config, args.overrides)
    try:
        if args.ray:
            from mmtrain.train.ray_launcher import run_with_ray

            result = run_with_ray(config, args)
        else:
            from mmtrain.train.loop import train

            result = train(
                config, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite
            )
    except TrainingInterrupted as stopped:
        if stopped.is_main:
            print(f"{stopped}", file=sys.stderr)
            launcher = (
                " (launched as this run was: accelerate launch ... -m mmtrain train ...)"
                if stopped.world_size > 1 and not args.ray
                else ""
            )
            command = resume_command(getattr(args, "argv", None))
            print(f"resume with: {command}{launcher}", file=sys.stderr)
        return 130
    if result.get("is_main", True):
        training_summary(result)
        printed = {k: result[k] for k in ("steps", "checkpoint", "output_dir")}
        # train.early_stopping and train.keep_best: why it stopped, which checkpoint is best
        printed |= {k: result[k] for k in ("stop_reason", "best_checkpoint") if result.get(k)}
        print(json.dumps(printed))
    return 0


def resume_command(argv: list[str] | None) -> str:
    """The `mmtrain train ...` command line that continues this run: the same arguments
    without --resume / --overwrite, plus `--resume latest`."""
    words = list(argv or ["train", "CONFIG"])
    kept: list[str] = []
    skip = 0
    for word in words:
        if skip:
            skip -= 1
            continue
        name = word.split("=", 1)[0]
        if name in _NOT_RESUMED:
            skip = _NOT_RESUMED[name] if "=" not in word else 0
            continue
        kept.append(word)
    return shlex.join(["mmtrain", *kept, "--resume", "latest"])
