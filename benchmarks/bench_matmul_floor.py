"""How much of a training step is matrix products: the CPU-time floor of a step's matmuls.

    python benchmarks/bench_matmul_floor.py --out benchmarks/cpustep/matmul_floor.csv

For every aggregator × objective cell of `bench_steps.py` (linear-Gaussian, M = 5, batch 500,
one intra-op thread):

1. the step's median CPU ms, timed as `bench_steps.py` times it;
2. every matrix product one step dispatches, forward and backward (`aten.mm`, `addmm`, `bmm`,
   `baddbmm`, with their shapes and strides), recorded under a `TorchDispatchMode`;
3. each recorded product replayed alone on fresh tensors of the same shapes and strides, its
   median CPU time summed over the step: the *matmul floor*. With warm caches and nothing
   else running, a product is not slower alone than inside the step, so the floor is what
   the step would cost if everything but its products took no time at all.

`step / floor` is therefore the largest CPU speed-up any change can give that keeps the
step's products (the model's arithmetic) as they are.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bench_steps import AGGREGATORS, experiment, machine, time_steps, train_step, write_csv
from torch.utils._python_dispatch import TorchDispatchMode

from mmtrain.config import TrainConfig
from mmtrain.data.loader import BatchLoader, build_loader
from mmtrain.factory import build_model
from mmtrain.optim import build_optimizer
from mmtrain.registry import OBJECTIVES

MATMULS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.baddbmm.default,
}


@dataclass(frozen=True)
class TensorSpec:
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype

    def make(self) -> torch.Tensor:
        """A tensor of this size and stride (a strided view of random storage, so that
        transposed or broadcast operands replay with their own memory layout)."""
        extent = 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        return torch.randn(extent, dtype=self.dtype).as_strided(self.size, self.stride)


@dataclass(frozen=True)
class MatmulCall:
    op: Any
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]

    def flops(self) -> int:
        """2·m·n·k per product (a batch of them for bmm/baddbmm)."""
        left, right = [a for a in self.args if isinstance(a, TensorSpec)][-2:]
        batch = math.prod(left.size[:-2])
        return 2 * batch * left.size[-2] * left.size[-1] * right.size[-1]

    def replay_cpu_seconds(self, repeats: int) -> float:
        args = [a.make() if isinstance(a, TensorSpec) else a for a in self.args]
        kwargs = dict(self.kwargs)
        self.op(*args, **kwargs)
        times = []
        for _ in range(repeats):
            start = time.process_time()
            self.op(*args, **kwargs)
            times.append(time.process_time() - start)
        return statistics.median(times)


def _spec(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return TensorSpec(tuple(value.shape), tuple(value.stride()), value.dtype)
    return value


class MatmulRecorder(TorchDispatchMode):
    """Counts every matrix product dispatched while active, by op, shapes and strides, and
    every other ATen op."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[MatmulCall] = Counter()
        self.other_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in MATMULS:
            spec = MatmulCall(func, tuple(_spec(a) for a in args), tuple(sorted(kwargs.items())))
            self.calls[spec] += 1
        else:
            self.other_ops += 1
        return func(*args, **kwargs)


def record_step(config: TrainConfig, loader: BatchLoader) -> MatmulRecorder:
    """The matrix products of one full training step (forward, backward, post-processing,
    Adam) on the cell's model, after one warm-up step."""
    loader.set_epoch(0)
    batches = iter(loader)
    torch.manual_seed(0)
    model = build_model(config.model, loader.plugins)
    optimizer = build_optimizer(model.parameters(), "adam", config.optim.lr)
    objective = OBJECTIVES.get(config.model.objective)
    clip = config.optim.gradient.clip
    train_step(model, objective, optimizer, next(batches), clip)
    recorder = MatmulRecorder()
    with recorder:
        train_step(model, objective, optimizer, next(batches), clip)
    return recorder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=15, help="replays per product")
    parser.add_argument("--aggregators", nargs="+", default=list(AGGREGATORS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/cpustep/matmul_floor.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        "| aggregator | objective | step CPU ms | products | other ops | GFLOP | matmul floor CPU ms "
        "| floor / step | GFLOP/s in products | largest speed-up |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for aggregator in args.aggregators:
        for objective in ("masked", "mixture"):
            config = experiment(aggregator, objective, 5, args.batch_size)
            loader = build_loader(config.data)
            _, cpu_times = time_steps(config, loader, args.warmup, args.steps)
            step_ms = 1000 * statistics.median(cpu_times)
            recorder = record_step(config, loader)
            calls = recorder.calls
            floor_s = sum(n * c.replay_cpu_seconds(args.repeats) for c, n in calls.items())
            flops = sum(n * c.flops() for c, n in calls.items())
            row = {
                "machine": machine(),
                "aggregator": aggregator,
                "objective": objective,
                "step_cpu_ms": round(step_ms, 2),
                "products_per_step": sum(calls.values()),
                "other_ops_per_step": recorder.other_ops,
                "gflop_per_step": round(flops / 1e9, 3),
                "matmul_floor_cpu_ms": round(1000 * floor_s, 2),
                "floor_share_of_step": round(1000 * floor_s / step_ms, 3),
                "gflops_in_products": round(flops / floor_s / 1e9, 1),
                "largest_speedup": round(step_ms / (1000 * floor_s), 3),
            }
            rows.append(row)
            print(
                f"| `{aggregator}` | {objective} | {step_ms:.1f} | {row['products_per_step']} "
                f"| {recorder.other_ops} "
                f"| {flops / 1e9:.2f} | {1000 * floor_s:.1f} | {row['floor_share_of_step']:.0%} "
                f"| {row['gflops_in_products']:.0f} | {row['largest_speedup']:.2f}× |",
                flush=True,
            )
    speedups = [r["largest_speedup"] for r in rows]
    geomean = math.exp(statistics.fmean(math.log(s) for s in speedups))
    print(f"geometric mean of the largest speed-ups: {geomean:.3f}×")
    write_csv(args.out, rows)


if __name__ == "__main__":
    main()
