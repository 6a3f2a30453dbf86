"""Training throughput and start-up time of the one loop under each launcher.

    python benchmarks/bench_train.py [CONFIG] --steps 200 --repeats 2 --out benchmarks/train.csv

Runs `mmtrain train CONFIG` as a subprocess, one launcher at a time:
  plain        mmtrain train CONFIG                           one process, T threads
  ray-1        ... --ray --num-workers 1 --cpus-per-worker T   one worker, T threads
  ray-2        ... --ray --num-workers 2 --cpus-per-worker C/2 two workers
  accelerate-2 accelerate launch --multi_gpu --num_processes 2 -m mmtrain train CONFIG
               (ACCELERATE_USE_CPU=true without a GPU), C/2 threads each
T is --threads (OMP_NUM_THREADS for plain; Ray sets it from the worker's CPUs), C the
machine's cores: every variant gets the same threads per process, so the comparison
measures the launcher, not thread scaling.
and splits each run's wall time with the files the loop writes on rank 0:
  start-up  launch → config.json (process, imports, Ray cluster, controller and workers,
            data and model built; the loop writes config.json just before its first step)
  training  config.json → summary.json
  teardown  summary.json → exit
Throughput after start-up: the median over the loop's log windows (metrics.jsonl), leaving
out the first window (first-step costs); examples/s count all ranks. CPU s/step: CPU time
(user + system) of the processes that run the loop, between the first and the last step,
summed over processes: unlike wall time, it hardly moves when other work shares the
machine, so it shows a launcher's own overhead. Without CONFIG the
quickstart config is used (configs/quickstart.yaml, or the same small model on embedded
data when that file does not exist yet).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
FALLBACK = """\
data: {source: ivae-bimodal, batch_size: 250}
model: {aggregator: sum_pooling, latent_dim: 2, feature_dim: 64}
train: {steps: 30, log_every: 10, checkpoint_every: 10}
output_dir: runs/quickstart
"""
VARIANTS = ("plain", "ray-1", "ray-2", "accelerate-2")


def threads_per_process(variant: str, threads: int) -> int:
    processes = int(variant.rsplit("-", 1)[1]) if "-" in variant else 1
    return threads if processes == 1 else max(1, (os.cpu_count() or 1) // processes)


def command(variant: str, config: Path, threads: int) -> list[str]:
    mmtrain = [sys.executable, "-m", "mmtrain"]
    if variant == "plain":
        return [*mmtrain, "train", str(config)]
    if variant.startswith("ray-"):
        workers = int(variant.split("-")[1])
        return [
            *mmtrain, "train", str(config), "--ray", "--num-workers", str(workers),
            "--cpus-per-worker", str(threads_per_process(variant, threads)),
        ]  # fmt: skip
    if variant == "accelerate-2":
        accelerate = str(Path(sys.executable).parent / "accelerate")
        return [
            accelerate, "launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no",
            "--main_process_port", "29577", "-m", "mmtrain", "train", str(config),
        ]  # fmt: skip
    raise ValueError(variant)


def training_processes(variant: str, launcher: psutil.Process, output: Path) -> list:
    """The processes that run the loop: the CLI itself (plain), the Ray Train workers
    (they record their pids), or the launcher's Python children (accelerate)."""
    if variant == "plain":
        return [launcher]
    if variant.startswith("ray-"):
        records = (output / "ray-workers").glob("rank-*.json")
        return [psutil.Process(json.loads(r.read_text())["pid"]) for r in records]
    return [
        child
        for child in launcher.children(recursive=True)
        if "mmtrain" in child.cmdline() and "accelerate" not in " ".join(child.cmdline()[:2])
    ]


def cpu_seconds(processes: list) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def wait_for(path: Path, process: subprocess.Popen, timeout: float) -> float:
    deadline = time.time() + timeout
    while not path.exists():
        if process.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"{path.name} never appeared")
        time.sleep(0.02)
    return time.time()


def run_once(variant: str, config: Path, workdir: Path, args: argparse.Namespace) -> dict:
    output = workdir / variant
    shutil.rmtree(output, ignore_errors=True)
    overrides = [
        f"output_dir={output}",
        f"train.steps={args.steps}",
        f"train.log_every={args.log_every}",
        "train.checkpoint_every=0",
        "train.eval_every=0",
    ]
    argv = command(variant, config, args.threads)
    argv += [part for o in overrides for part in ("--set", o)] + ["--quiet"]
    threads = threads_per_process(variant, args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("RAY_ADDRESS", None)
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"
    load_before = os.getloadavg()[0]
    log = (workdir / f"{variant}.log").open("w")
    started = time.time()
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # The loop writes config.json just before its first step and summary.json after
        # its last: the CPU time its processes spend in between is the training's.
        first_step = wait_for(output / "config.json", process, args.timeout)
        workers = training_processes(variant, psutil.Process(process.pid), output)
        cpu_before = cpu_seconds(workers)
        trained = wait_for(output / "summary.json", process, args.timeout)
        cpu_training = cpu_seconds(workers) - cpu_before
        code = process.wait(args.timeout)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    finished = time.time()
    if code != 0:
        tail = (workdir / f"{variant}.log").read_text()[-3000:]
        raise RuntimeError(f"{variant} failed ({code}):\n{tail}")
    summary = json.loads((output / "summary.json").read_text())
    windows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    steady = windows[1:] or windows
    return {
        "variant": variant,
        "world_size": summary["world_size"],
        "threads": threads,
        "steps": summary["steps"],
        "startup_s": first_step - started,
        "training_s": trained - first_step,
        "teardown_s": finished - trained,
        "wall_s": finished - started,
        "steps_per_s": statistics.median(w["train/steps_per_second"] for w in steady),
        "examples_per_s": statistics.median(w["train/examples_per_second"] for w in steady),
        "overall_steps_per_s": summary["steps"] / max(trained - first_step, 1e-9),
        "cpu_s_per_step": cpu_training / summary["steps"],
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def markdown(rows: list[dict]) -> str:
    plain = statistics.median(r["steps_per_s"] for r in rows if r["variant"] == "plain")
    lines = [
        "| launcher | processes × threads | start-up s | steps/s | examples/s | vs plain "
        "| CPU s/step (all processes) | teardown s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]

        def med(key: str, mine: list[dict] = mine) -> float:
            return statistics.median(r[key] for r in mine)

        lines.append(
            f"| {variant} | {mine[0]['world_size']} × {mine[0]['threads']} | "
            f"{med('startup_s'):.1f} | "
            f"{med('steps_per_s'):.2f} | {med('examples_per_s'):.0f} | "
            f"{med('steps_per_s') / plain:.0%} | {med('cpu_s_per_step'):.3f} | "
            f"{med('teardown_s'):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads of one-process runs")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/train.csv"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        workdir = Path(tmp)
        config = args.config
        if config is None:
            config = QUICKSTART if QUICKSTART.is_file() else workdir / "quickstart.yaml"
            if not config.is_file():
                config.write_text(FALLBACK)
        from mmtrain.config import load_config
        from mmtrain.data.loader import build_loader

        build_loader(load_config(config).data)  # embedded data generated before any timing
        rows = []
        for repeat in range(args.repeats):
            for variant in args.variants:  # interleaved, so drifting load hits all alike
                row = run_once(variant, config, workdir, args)
                row["repeat"] = repeat
                rows.append(row)
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                  for k, v in row.items()}), flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "machine"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "machine": machine()})
    print(f"\n{machine()}; config {config.name}; {args.steps} steps, median of {args.repeats}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
