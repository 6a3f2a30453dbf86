"""Eager versus `torch.compile` training steps on the linear-Gaussian paper setting (CPU).

    python benchmarks/bench_compile.py --out benchmarks/compile.csv

The compiled module is the one `train.compile: true` builds (`ObjectiveModule` under
`torch.compile`, Inductor): forward and, through AOTAutograd, backward; the gradient
post-processing and Adam stay eager as in the loop. Reports the first compiled step (the
compilation, wall and CPU seconds) and the median wall / CPU ms of the steps after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch._dynamo
from bench_steps import experiment, machine, time_steps, write_csv
from torch._dynamo.utils import counters

from mmtrain.config import TrainConfig
from mmtrain.data.loader import BatchLoader, build_loader


def timed_steps(
    config: TrainConfig, loader: BatchLoader, steps: int, compiled: bool
) -> tuple[list[float], list[float], int]:
    """Wall and CPU seconds of each step (the first includes compilation) and the number
    of graphs Dynamo compiled."""
    torch._dynamo.reset()
    counters.clear()
    walls, cpus = time_steps(config, loader, warmup=0, steps=steps, compiled=compiled)
    return walls, cpus, int(counters["stats"]["unique_graphs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modalities", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--steps", type=int, default=20, help="steps per run, the first timed apart"
    )
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the median")
    parser.add_argument(
        "--aggregators", nargs="+", default=["poe", "sum_pooling", "self_attention"]
    )
    parser.add_argument("--objectives", nargs="+", default=["masked", "mixture"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/compile.csv"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loader = build_loader(experiment("poe", "masked", args.modalities, args.batch_size).data)
    rows = []
    for aggregator in args.aggregators:
        for objective in args.objectives:
            config = experiment(aggregator, objective, args.modalities, args.batch_size)
            row: dict[str, object] = {
                "machine": machine(),
                "modalities": args.modalities,
                "batch_size": args.batch_size,
                "aggregator": aggregator,
                "objective": objective,
            }
            for label, compiled in (("eager", False), ("compiled", True)):
                walls, cpus, graphs = timed_steps(config, loader, args.steps, compiled)
                row[f"{label}_first_step_s"] = f"{walls[0]:.2f}"
                row[f"{label}_first_step_cpu_s"] = f"{cpus[0]:.2f}"
                row[f"{label}_median_ms"] = f"{1000 * statistics.median(walls[args.warmup :]):.1f}"
                row[f"{label}_median_cpu_ms"] = (
                    f"{1000 * statistics.median(cpus[args.warmup :]):.1f}"
                )
                if compiled:
                    row["graphs"] = graphs
            speedup = float(row["eager_median_cpu_ms"]) / float(row["compiled_median_cpu_ms"])
            row["cpu_speedup"] = f"{speedup:.2f}"
            rows.append(row)
            print(
                f"{aggregator:>15} {objective:>8}: eager {row['eager_median_cpu_ms']} CPU ms, "
                f"compiled {row['compiled_median_cpu_ms']} CPU ms ({speedup:.2f}×), compile "
                f"{row['compiled_first_step_s']} s wall / {row['compiled_first_step_cpu_s']} CPU s, "
                f"{row['graphs']} graph(s)",
                flush=True,
            )
    write_csv(args.out, rows)


if __name__ == "__main__":
    main()
