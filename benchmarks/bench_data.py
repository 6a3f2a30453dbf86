"""Data loader throughput next to the training step rate of the model that consumes it.

    python benchmarks/bench_data.py [--json benchmarks/data.json]

For each embedded dataset: examples/s that `build_loader` delivers with 0 and 2 loader
workers (whole epochs after a warm-up epoch; the JSON also has the start-up time, building
the loader plus that first epoch), and the examples/s that training steps (objective,
backward, gradient post-processing, Adam) of the consuming model eat on batches already in
memory. The simulated sets use their experiment's model and batch size
(`configs/paper/NAME.yaml`, paper §5); `digits` uses the default training config's model
(`mmtrain.factory.build_model(TrainConfig().model, ...)`).

On a shared machine both rates drift with its load, so they are measured in alternating
rounds; the best round of each (the least disturbed) gives the wall-clock ratio loader /
model, the headroom, whose goal is at least 10× (medians in brackets). The CPU ratio hardly
depends on the load: CPU time per example of training steps on one thread over that of the
loader in the training process (0 workers: it decodes on one thread), medians of the rounds;
it is the headroom when loading and training get the same share of the cores.
The built-in plugins decode a chunk of cells at once (`decode_batch`); `--per-cell` turns
that off to measure one `decode_cell` call per cell. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import datasets
import torch

from mmtrain.batch import Batch
from mmtrain.config import TrainConfig
from mmtrain.data import BatchLoader, DataConfig, build_loader
from mmtrain.factory import build_model
from mmtrain.model import MultiModalVAE
from mmtrain.optim import build_optimizer, postprocess_gradients
from mmtrain.paper import experiment_config
from mmtrain.registry import OBJECTIVES
from mmtrain.testing import per_cell_decoding

DATASETS = ("linear-gaussian", "ivae-bimodal", "ivae-multimodal", "digits")


def loader_rate(loader: BatchLoader, epoch: int, min_seconds: float) -> tuple[float, float, int]:
    """Examples/s and CPU µs of this process per example over whole epochs (at least
    `min_seconds`); returns them and the next epoch."""
    examples, elapsed, cpu = 0, 0.0, 0.0
    while elapsed < min_seconds:
        loader.set_epoch(epoch)
        start, start_cpu = time.perf_counter(), time.process_time()
        examples += sum(batch.size for batch in loader)
        elapsed += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        epoch += 1
    return examples / elapsed, cpu / examples * 1e6, epoch


class Consumer:
    """Full optimiser steps of one model on in-memory batches."""

    def __init__(self, name: str) -> None:
        if name == "digits":
            config = TrainConfig()
            loader = build_loader(config.data)
            self.what = "TrainConfig() default model"
        else:
            config = experiment_config(name)
            # the experiment's model, batch size and data, streamed rather than in memory
            loader = build_loader(config.data.replace(in_memory=False))
            self.what = f"experiment model ({config.model.aggregator}, masked)"
        torch.manual_seed(0)
        self.model: MultiModalVAE = build_model(config.model, loader.plugins)
        self.batch_size, self.lr = config.data.batch_size, config.optim.lr
        self.clip = config.optim.gradient.clip
        self.options: dict[str, object] = {
            "samples": config.model.samples,
            "beta": config.model.beta,
            "stl": config.model.stl,
            "subset_mode": config.model.subset_mode,
        }
        self.batches = [b for _, b in zip(range(4), loader)]
        self.objective = OBJECTIVES.get("masked")
        self.optimizer = build_optimizer(self.model.parameters(), "adam", self.lr)
        self.model.train()
        self.rate(0.0)

    def step(self, batch: Batch) -> None:
        out = self.objective(self.model, batch, **self.options)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        postprocess_gradients(self.model.parameters(), "elementwise", self.clip)
        self.optimizer.step()

    def rate(self, min_seconds: float) -> float:
        """Examples/s of at least 3 steps and `min_seconds` (default threads)."""
        examples, elapsed, step = 0, 0.0, 0
        while step < 3 or elapsed < min_seconds:
            batch = self.batches[step % len(self.batches)]
            start = time.perf_counter()
            self.step(batch)
            elapsed += time.perf_counter() - start
            examples += batch.size
            step += 1
        return examples / elapsed

    def cpu_cost(self, min_seconds: float) -> float:
        """CPU µs per example of steps on one thread (no idle-spinning helper threads, so
        it hardly depends on the machine's load)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            examples, cpu, step = 0, 0.0, 0
            while step < 3 or cpu < min_seconds:
                batch = self.batches[step % len(self.batches)]
                start = time.process_time()
                self.step(batch)
                cpu += time.process_time() - start
                examples += batch.size
                step += 1
        finally:
            torch.set_num_threads(threads)
        return cpu / examples * 1e6


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU, "
        f"torch {torch.__version__}, datasets {datasets.__version__}, "
        f"load average {load:.1f} at start"
    )


BUILT_IN_KINDS = ("vector", "label", "text", "image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per figure")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--per-cell",
        action="store_true",
        help="turn the built-in plugins' decode_batch off: one decode_cell call per cell",
    )
    args = parser.parse_args()
    # --per-cell: the built-in kinds with decode_batch off, the baseline whole-chunk decoding beats.
    with per_cell_decoding(BUILT_IN_KINDS) if args.per_cell else nullcontext():
        run(args)


def run(args: argparse.Namespace) -> None:
    suffix = ", built-in plugins decoding per cell" if args.per_cell else ""
    print(machine() + suffix)
    print(
        "| dataset | batch | loader ex/s, 0 workers | loader ex/s, 2 workers | train ex/s "
        "| wall ratio | loader CPU µs/ex | train CPU µs/ex | CPU ratio | model |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name in args.datasets:
        consumer = Consumer(name)
        loaders = {}
        for workers in args.workers:
            start = time.perf_counter()
            config = DataConfig(name, batch_size=consumer.batch_size, num_workers=workers)
            loader = build_loader(config)
            sum(batch.size for batch in loader)
            loaders[workers] = [loader, time.perf_counter() - start, 1]
        train: list[float] = []
        train_costs: list[float] = []
        loads: dict[int, list[tuple[float, float]]] = {w: [] for w in args.workers}
        for _ in range(args.rounds):
            train.append(consumer.rate(args.seconds))
            train_costs.append(consumer.cpu_cost(args.seconds))
            for workers, entry in loaders.items():
                rate, cpu, entry[2] = loader_rate(entry[0], entry[2], args.seconds)
                loads[workers].append((rate, cpu))
        best_train = max(train)
        train_cpu = statistics.median(train_costs)
        row = {
            "dataset": name,
            "batch_size": consumer.batch_size,
            "model": consumer.what,
            "train_rounds": train,
            "train_cpu_rounds": train_costs,
            "train_examples_per_s": best_train,
            "train_cpu_us_per_example": train_cpu,
            "loader": {},
        }
        cells = []
        for workers, (_, startup, _) in loaders.items():
            best = max(r for r, _ in loads[workers])
            row["loader"][workers] = {
                "rounds": loads[workers],
                "examples_per_s": best,
                "startup_s": startup,
                "cpu_us_per_example": statistics.median(c for _, c in loads[workers]),
            }
            median = statistics.median(r for r, _ in loads[workers])
            cells.append(f"{best:,.0f} ({median:,.0f})")
        best_loader = max(v["examples_per_s"] for v in row["loader"].values())
        row["wall_ratio"] = best_loader / best_train
        line = (
            f"| {name} | {consumer.batch_size} | {' | '.join(cells)} "
            f"| {best_train:,.0f} ({statistics.median(train):,.0f}) "
            f"| {row['wall_ratio']:.1f}× "
        )
        if 0 in row["loader"]:
            loader_cpu = row["loader"][0]["cpu_us_per_example"]
            row["cpu_ratio"] = train_cpu / loader_cpu
            line += f"| {loader_cpu:,.0f} | {train_cpu:,.0f} | {row['cpu_ratio']:.1f}× "
        else:
            line += "| – | – | – "
        print(line + f"| {consumer.what} |", flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
