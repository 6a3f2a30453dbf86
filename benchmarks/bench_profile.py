"""Where a training step's CPU time goes, and how a step's cost grows with M.

    python benchmarks/bench_profile.py --out benchmarks/profile.csv

Two tables on the linear-Gaussian paper setting (batch 500, one intra-op thread):

- `phases`: process-CPU ms per step in each phase — the encoders (`encode_features`), the
  aggregator (`posterior` / `posterior_pair`), the decoders with their likelihoods
  (`reconstruction_log_probs`), the rest of the objective (subset sampling, rsample, the
  log q and log p terms), backward, gradient post-processing and the optimiser step. The
  model's methods are wrapped with timers from outside, so the same script times any
  version of the model that keeps these method names.
- `scaling`: CPU ms per step for M = 2 … 32 at a fixed per-modality size (latent 30,
  features 60, so only the number of modalities changes), one aggregator and objective.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_steps import AGGREGATORS, machine, write_csv

from mmtrain.batch import Batch
from mmtrain.config import TrainConfig
from mmtrain.data.loader import build_loader
from mmtrain.factory import build_model
from mmtrain.model import MultiModalVAE
from mmtrain.optim import build_optimizer, postprocess_gradients
from mmtrain.paper import ExperimentOptions, experiment_config
from mmtrain.registry import OBJECTIVES

#: model methods timed as phases of the forward pass (their callers' time excludes them)
MODEL_PHASES = {
    "encode_features": "encoders",
    "posterior": "aggregator",
    "posterior_pair": "aggregator",
    "reconstruction_log_probs": "decoders + log p(x|z)",
}
PHASES = (
    "encoders",
    "aggregator",
    "decoders + log p(x|z)",
    "objective terms",
    "backward",
    "grad post-processing",
    "optimizer",
)


class PhaseClock:
    """Process-CPU seconds per phase, summed over the timed steps."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.active = False

    def wrap(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.active:
                    self.seconds[phase] += time.process_time() - start

        return timed

    def instrument(self, model: MultiModalVAE) -> None:
        for method, phase in MODEL_PHASES.items():
            setattr(model, method, self.wrap(phase, getattr(model, method)))


def config_for(
    aggregator: str, objective: str, modalities: int, batch_size: int, fixed_latent: bool
) -> TrainConfig:
    options = ExperimentOptions(
        aggregator=aggregator, objective=objective, modalities=modalities, batch_size=batch_size
    )
    # A fixed latent keeps every modality's networks the same size as M grows.
    overrides = ["model.latent_dim=30", "model.feature_dim=60"] if fixed_latent else []
    return experiment_config("linear-gaussian", options, overrides)


def batches_for(config: TrainConfig, count: int) -> list[Batch]:
    loader = build_loader(config.data)
    batches: list[Batch] = []
    epoch = 0
    while len(batches) < count:
        loader.set_epoch(epoch)
        batches.extend(loader)
        epoch += 1
    return batches[:count]


def profile_steps(
    config: TrainConfig, warmup: int, steps: int
) -> tuple[dict[str, float], float, float]:
    """Per-phase CPU ms per step, total CPU ms per step (median) and wall ms per step
    (median) over `steps` steps after `warmup`."""
    batches = batches_for(config, warmup + steps)
    torch.manual_seed(0)
    model = build_model(config.model, build_loader(config.data).plugins)
    objective = OBJECTIVES.get(config.model.objective)
    optimizer = build_optimizer(model.parameters(), "adam", config.optim.lr)
    clock = PhaseClock()
    clock.instrument(model)
    clip = config.optim.gradient.clip
    cpu_times, wall_times = [], []
    for i, batch in enumerate(batches):
        clock.active = i >= warmup
        wall, cpu = time.perf_counter(), time.process_time()
        out = objective(model, batch)
        forward = time.process_time()
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        backward = time.process_time()
        postprocess_gradients(model.parameters(), "elementwise", clip)
        post = time.process_time()
        optimizer.step()
        end = time.process_time()
        if clock.active:
            clock.seconds["forward"] += forward - cpu
            clock.seconds["backward"] += backward - forward
            clock.seconds["grad post-processing"] += post - backward
            clock.seconds["optimizer"] += end - post
            cpu_times.append(end - cpu)
            wall_times.append(time.perf_counter() - wall)
    model_phases = sum(clock.seconds[p] for p in set(MODEL_PHASES.values()))
    clock.seconds["objective terms"] = clock.seconds.pop("forward") - model_phases
    per_step = {phase: 1000 * clock.seconds[phase] / steps for phase in PHASES}
    return per_step, 1000 * statistics.median(cpu_times), 1000 * statistics.median(wall_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--modalities", type=int, default=5, help="M of the phase table")
    parser.add_argument(
        "--aggregators", nargs="+", default=["poe", "sum_pooling", "self_attention"]
    )
    parser.add_argument("--objectives", nargs="+", default=["masked", "mixture"])
    parser.add_argument("--scaling", type=int, nargs="*", default=[2, 4, 8, 16, 32])
    parser.add_argument("--scaling-aggregator", default="sum_pooling", choices=AGGREGATORS)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--label", default="", help="a name for this code version")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/profile.csv"))
    parser.add_argument("--scaling-out", type=Path, default=Path("benchmarks/scaling.csv"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    print("| aggregator | objective | " + " | ".join(PHASES) + " | step CPU ms | step wall ms |")
    for aggregator in args.aggregators:
        for objective in args.objectives:
            config = config_for(aggregator, objective, args.modalities, args.batch_size, False)
            phases, cpu_ms, wall_ms = profile_steps(config, args.warmup, args.steps)
            cells = " | ".join(f"{phases[p]:.1f}" for p in PHASES)
            print(f"| `{aggregator}` | {objective} | {cells} | {cpu_ms:.1f} | {wall_ms:.1f} |")
            rows.append(
                {
                    "label": args.label,
                    "machine": machine(),
                    "modalities": args.modalities,
                    "aggregator": aggregator,
                    "objective": objective,
                    **{f"{p} cpu_ms": f"{phases[p]:.2f}" for p in PHASES},
                    "step_cpu_ms": f"{cpu_ms:.2f}",
                    "step_wall_ms": f"{wall_ms:.2f}",
                }
            )
    write_csv(args.out, rows)

    if not args.scaling:
        return
    scaling = []
    print("| M | step CPU ms | CPU ms per modality | encoders CPU ms | step wall ms |")
    for m in args.scaling:
        config = config_for(args.scaling_aggregator, "masked", m, args.batch_size, True)
        phases, cpu_ms, wall_ms = profile_steps(config, args.warmup, args.steps)
        print(
            f"| {m} | {cpu_ms:.1f} | {cpu_ms / m:.1f} | {phases['encoders']:.1f} | {wall_ms:.1f} |"
        )
        scaling.append(
            {
                "label": args.label,
                "machine": machine(),
                "modalities": m,
                "aggregator": args.scaling_aggregator,
                "objective": "masked",
                "step_cpu_ms": f"{cpu_ms:.2f}",
                "cpu_ms_per_modality": f"{cpu_ms / m:.2f}",
                "encoders_cpu_ms": f"{phases['encoders']:.2f}",
                "step_wall_ms": f"{wall_ms:.2f}",
            }
        )
    write_csv(args.scaling_out, scaling)


if __name__ == "__main__":
    main()
