"""One training step of a config on a CUDA GPU: eager against `torch.compile`, fp32 against
bf16 autocast, and the training loop itself.

    python benchmarks/gpu_train_step.py [CONFIG] --steps 100 --out train_step.csv

Two measurements, one row each in the CSV:
  step   the objective's forward and backward and the Adam step, on batches drawn once from
         the config's data and kept on the GPU (no data loading): `eager` and `compiled`
         (`torch.compile` of the objective module, default mode), each in fp32 and under
         bf16 autocast. Median ms/step over `--steps` steps after `--warmup` steps, peak
         memory (`torch.cuda.max_memory_allocated`), FLOPs per step counted by
         `torch.utils.flop_counter.FlopCounterMode` on one eager step, and MFU = FLOPs/step ÷
         step time ÷ the GPU's dense peak for that precision (H100/H200 SXM: 989 TFLOP/s bf16,
         67 TFLOP/s fp32 without tensor cores — the fp32 step uses no TF32).
  loop   `mmtrain.train.train` on the config with `train.mixed_precision` no and bf16:
         the median of the loop's own steps/s over its log windows after the first (data
         loading and logging included).
A variant that fails (a compile error, say) is a row with its error, not a crash.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: dense peak FLOP/s by GPU name fragment: (bf16 tensor cores, fp32 without tensor cores)
PEAK_FLOPS = {"H200": (989e12, 67e12), "H100": (989e12, 67e12), "A100": (312e12, 19.5e12)}
COLUMNS = ["gpu", "what", "variant", "precision", "ms_per_step", "steps_per_s", "peak_mib"]
COLUMNS += ["gflop_per_step", "mfu", "compile_s", "error"]


def peak_flops(gpu: str, precision: str) -> float | None:
    for fragment, (bf16, fp32) in PEAK_FLOPS.items():
        if fragment in gpu:
            return bf16 if precision == "bf16" else fp32
    return None


def build(config_path: Path, device: torch.device, batches: int) -> tuple[Any, list[Any]]:
    """The objective module of the config on `device` and `batches` batches of its data."""
    from mmtrain.config import load_config
    from mmtrain.data.loader import build_loader
    from mmtrain.factory import build_model
    from mmtrain.objectives import ObjectiveModule

    config = load_config(config_path)
    loader = build_loader(config.data)
    model = build_model(config.model, loader.plugins).to(device)
    objective = ObjectiveModule.from_config(model, config.model)
    data = []
    for batch in loader:
        data.append(batch.to(device))
        if len(data) == batches:
            break
    return objective, data


def time_steps(
    step: Callable[[Any], None], data: list[Any], warmup: int, steps: int
) -> list[float]:
    for index in range(warmup):
        step(data[index % len(data)])
    torch.cuda.synchronize()
    times = []
    for index in range(steps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        step(data[index % len(data)])
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


def step_rows(args: argparse.Namespace, gpu: str, device: torch.device) -> list[dict[str, Any]]:
    from torch.utils.flop_counter import FlopCounterMode

    rows = []
    for precision in ("fp32", "bf16"):
        for variant in ("eager", "compiled"):
            row: dict[str, Any] = {"gpu": gpu, "what": "step", "variant": variant}
            row["precision"] = precision
            try:
                torch.manual_seed(0)
                objective, data = build(args.config, device, args.batches)
                optimizer = torch.optim.Adam(objective.parameters(), lr=1e-3)
                module = torch.compile(objective) if variant == "compiled" else objective
                bf16 = precision == "bf16"

                def step(
                    batch: Any, module: Any = module, optimizer: Any = optimizer, bf16: bool = bf16
                ) -> None:
                    with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
                        loss = module(batch).loss
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)

                started = time.perf_counter()
                step(data[0])
                torch.cuda.synchronize()
                row["compile_s"] = round(time.perf_counter() - started, 2)
                if variant == "eager":
                    with FlopCounterMode(display=False) as counter:
                        step(data[0])
                    flops = counter.get_total_flops()
                torch.cuda.reset_peak_memory_stats()
                times = time_steps(step, data, args.warmup, args.steps)
                ms = statistics.median(times)
                row["ms_per_step"] = round(ms, 4)
                row["steps_per_s"] = round(1000 / ms, 1)
                row["peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
                row["gflop_per_step"] = round(flops / 1e9, 4)
                peak = peak_flops(gpu, precision)
                row["mfu"] = None if peak is None else f"{flops / (ms / 1000) / peak:.2e}"
            except Exception as error:  # noqa: BLE001 - a failing variant is a result
                row["error"] = f"{type(error).__name__}: {error}".splitlines()[0][:300]
                traceback.print_exc()
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def loop_row(args: argparse.Namespace, gpu: str, precision: str) -> dict[str, Any]:
    """One run of the training loop in this process (Accelerate's state is per process)."""
    from mmtrain.config import load_config
    from mmtrain.train import train

    row: dict[str, Any] = {"gpu": gpu, "what": "loop", "variant": "eager"}
    row["precision"] = "fp32" if precision == "no" else precision
    with tempfile.TemporaryDirectory() as out:
        overrides = [
            f"output_dir={out}/run",
            f"train.mixed_precision={precision}",
            f"train.steps={args.loop_steps}",
            "train.log_every=50",
            f"train.eval_every={args.loop_steps}",
            f"train.checkpoint_every={args.loop_steps}",
        ]
        torch.cuda.reset_peak_memory_stats()
        train(load_config(args.config, overrides), progress=False)
        lines = (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()
    rates = [json.loads(line).get("train/steps_per_second") for line in lines]
    rates = [rate for rate in rates if rate][1:]
    row["steps_per_s"] = round(statistics.median(rates), 1)
    row["ms_per_step"] = round(1000 / row["steps_per_s"], 4)
    row["peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def loop_rows(args: argparse.Namespace, gpu: str) -> list[dict[str, Any]]:
    """The training loop with `train.mixed_precision` no and bf16, each in a fresh process."""
    rows = []
    for precision in ("no", "bf16"):
        command = [sys.executable, __file__, str(args.config), "--loop-only", precision]
        command += ["--loop-steps", str(args.loop_steps)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        print(done.stderr[-3000:], flush=True)
        try:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        except (IndexError, json.JSONDecodeError):
            error = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            row = {"gpu": gpu, "what": "loop", "variant": "eager", "error": error}
            rows.append({**row, "precision": "fp32" if precision == "no" else precision})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", type=Path, default=Path("configs/quickstart.yaml"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batches", type=int, default=8, help="distinct batches, cycled")
    parser.add_argument("--loop-steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("train_step.csv"))
    parser.add_argument("--skip-step", action="store_true", help="only the training loop")
    parser.add_argument("--loop-only", choices=["no", "bf16"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_train_step.py needs a CUDA GPU")
    device = torch.device("cuda")
    gpu = torch.cuda.get_device_name(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    if args.loop_only:
        print(json.dumps(loop_row(args, gpu, args.loop_only)))
        return
    rows = [] if args.skip_step else step_rows(args, gpu, device)
    rows += loop_rows(args, gpu)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
