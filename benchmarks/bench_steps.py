"""Training steps per second on the linear-Gaussian paper setting, per aggregator × objective.

    python benchmarks/bench_steps.py --out benchmarks/steps.csv

Times full optimiser steps (objective, backward, gradient post-processing, Adam) on the
experiment model of SPEC §4.1 after a warm-up; the data are generated once per M.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from mmtrain.experiments import ExperimentSettings, build_model, epoch_batches, make_data, take
from mmtrain.optim import build_optimizer, postprocess_gradients
from mmtrain.registry import OBJECTIVES

AGGREGATORS = (
    "poe",
    "moe",
    "sum_pooling",
    "self_attention",
    "sum_pooling_mixture",
    "self_attention_mixture",
)


def time_steps(
    settings: ExperimentSettings, data, warmup: int, steps: int
) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU seconds of each timed step. With one intra-op thread the
    CPU time barely moves when other jobs share the machine; the wall time does."""
    torch.manual_seed(0)
    model = build_model(settings, data)
    objective = OBJECTIVES.get(settings.objective)
    optimizer = build_optimizer(model.parameters(), "adam", settings.lr)
    generator = torch.Generator().manual_seed(0)
    batches = []
    while len(batches) < warmup + steps:
        batches.extend(epoch_batches(data.train.size, settings.batch_size, generator))
    durations, cpu_times = [], []
    for i, index in enumerate(batches[: warmup + steps]):
        batch = take(data.train, index)
        start, cpu_start = time.perf_counter(), time.process_time()
        out = objective(model, batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        postprocess_gradients(model.parameters(), "elementwise", settings.clip)
        optimizer.step()
        if i >= warmup:
            durations.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    return durations, cpu_times


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
        base = ExperimentSettings.defaults(
            "linear-gaussian", modalities=m, batch_size=args.batch_size
        )
        data = make_data(base)
        for aggregator in args.aggregators:
            for objective in ("masked", "mixture"):
                settings = ExperimentSettings.defaults(
                    "linear-gaussian",
                    aggregator,
                    objective=objective,
                    modalities=m,
                    batch_size=args.batch_size,
                )
                durations, cpu_times = time_steps(settings, data, args.warmup, args.steps)
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
