"""Training steps per second on the linear-Gaussian paper setting, per aggregator × objective.

    python benchmarks/bench_steps.py --out benchmarks/steps.csv

Times full optimiser steps (objective, backward, gradient post-processing, Adam) on the
model of `configs/paper/linear-gaussian.yaml` (paper §5.1) after a warm-up; the data are
read once per M through the data layer and batched in memory.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mmtrain.batch import Batch
from mmtrain.config import TrainConfig
from mmtrain.data.loader import BatchLoader, build_loader
from mmtrain.factory import build_model
from mmtrain.objectives import ObjectiveModule, ObjectiveOutput
from mmtrain.optim import build_optimizer, postprocess_gradients
from mmtrain.paper import ExperimentOptions, experiment_config
from mmtrain.registry import OBJECTIVES

AGGREGATORS = (
    "poe",
    "moe",
    "sum_pooling",
    "self_attention",
    "sum_pooling_mixture",
    "self_attention_mixture",
)


def experiment(aggregator: str, objective: str, modalities: int, batch_size: int) -> TrainConfig:
    options = ExperimentOptions(
        aggregator=aggregator, objective=objective, modalities=modalities, batch_size=batch_size
    )
    return experiment_config("linear-gaussian", options)


def train_step(
    model: torch.nn.Module,
    objective: Callable[..., ObjectiveOutput],
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    clip: float,
    postprocess: Callable[..., int] = postprocess_gradients,
) -> None:
    """One benchmarked step: the objective, backward, the paper's gradient post-processing
    (NaN→0, elementwise clip) and the optimiser."""
    out = objective(model, batch)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    postprocess(model.parameters(), "elementwise", clip)
    optimizer.step()


def time_steps(
    config: TrainConfig,
    loader: BatchLoader,
    warmup: int,
    steps: int,
    build: Callable[..., torch.optim.Optimizer] = build_optimizer,
    postprocess: Callable[..., int] = postprocess_gradients,
    compiled: bool = False,
) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU seconds of each timed step. With one intra-op thread the
    CPU time barely moves when other jobs share the machine; the wall time does. `build`
    and `postprocess` replace the optimiser factory and the gradient post-processing (to
    time another version of them in the same process). `compiled` runs the forward as
    `train.compile: true` does: the objective's module under `torch.compile`."""
    torch.manual_seed(0)
    model = build_model(config.model, loader.plugins)
    if compiled:
        compiled_step = torch.compile(ObjectiveModule.from_config(model, config.model))

        def objective(_: object, batch: Batch) -> ObjectiveOutput:
            return compiled_step(batch)
    else:
        objective = OBJECTIVES.get(config.model.objective)
    optimizer = build(model.parameters(), "adam", config.optim.lr)
    batches: list[Batch] = []
    epoch = 0
    while len(batches) < warmup + steps:
        loader.set_epoch(epoch)
        batches.extend(loader)
        epoch += 1
    durations, cpu_times = [], []
    clip = config.optim.gradient.clip
    for i, batch in enumerate(batches[: warmup + steps]):
        start, cpu_start = time.perf_counter(), time.process_time()
        train_step(model, objective, optimizer, batch, clip, postprocess)
        if i >= warmup:
            durations.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    return durations, cpu_times


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    """The benchmark's rows as a CSV file (columns: the first row's keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modalities", type=int, nargs="+", default=[5, 2])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--aggregators", nargs="+", default=list(AGGREGATORS))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/steps.csv"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for m in args.modalities:
        loader = build_loader(experiment("sum_pooling", "masked", m, args.batch_size).data)
        for aggregator in args.aggregators:
            for objective in ("masked", "mixture"):
                config = experiment(aggregator, objective, m, args.batch_size)
                durations, cpu_times = time_steps(config, loader, args.warmup, args.steps)
                median = statistics.median(durations)
                cpu_median = statistics.median(cpu_times)
                row = {
                    "machine": machine(),
                    "experiment": "linear-gaussian",
                    "modalities": m,
                    "batch_size": args.batch_size,
                    "aggregator": aggregator,
                    "objective": objective,
                    "median_step_s": f"{median:.4f}",
                    "median_cpu_step_s": f"{cpu_median:.4f}",
                    "steps_per_second": f"{1 / median:.2f}",
                    "examples_per_second": f"{args.batch_size / median:.0f}",
                }
                rows.append(row)
                print(
                    f"M={m} {aggregator:>22} {objective:>8}: {1 / median:6.2f} steps/s, "
                    f"{1000 * cpu_median:6.1f} CPU ms/step"
                )
    write_csv(args.out, rows)


if __name__ == "__main__":
    main()
