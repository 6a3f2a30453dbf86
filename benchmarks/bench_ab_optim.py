"""Training-step CPU time with this checkout's optimiser and gradient post-processing
against those of an earlier commit, paired cell by cell in one process.

    python benchmarks/bench_ab_optim.py --base f5372e5 --out benchmarks/steps_ab.csv

`mmtrain/optim.py` of `--base` (read with `git show`) is loaded as a separate module; for
every aggregator × objective cell of `bench_steps.py` the two versions take turns (ABBA over
`--rounds`), each on a freshly built model, so both see the same load on a shared machine.
Everything else in the step (model, objective, backward) is this checkout's code.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch
from bench_steps import AGGREGATORS, experiment, machine, time_steps, write_csv

from mmtrain import optim
from mmtrain.data.loader import build_loader

ROOT = Path(__file__).resolve().parents[1]


def base_optim(commit: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{commit}:mmtrain/optim.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "optim_base.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("optim_base", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["optim_base"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="f5372e5", help="the commit to compare against")
    parser.add_argument("--modalities", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--aggregators", nargs="+", default=list(AGGREGATORS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/steps_ab.csv"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    versions = {args.base: base_optim(args.base), "this checkout": optim}
    m = args.modalities
    loader = build_loader(experiment("sum_pooling", "masked", m, args.batch_size).data)
    rows, ratios = [], []
    print(f"| aggregator | objective | {args.base} CPU ms | this CPU ms | ratio |")
    print("|---|---|---|---|---|")
    for aggregator in args.aggregators:
        for objective in ("masked", "mixture"):
            config = experiment(aggregator, objective, m, args.batch_size)
            cpu: dict[str, list[float]] = {name: [] for name in versions}
            for round_ in range(args.rounds):
                order = list(versions) if round_ % 2 == 0 else list(versions)[::-1]
                for name in order:
                    module = versions[name]
                    _, cpu_times = time_steps(
                        config,
                        loader,
                        args.warmup,
                        args.steps,
                        module.build_optimizer,
                        module.postprocess_gradients,
                    )
                    cpu[name].extend(cpu_times)
            before = 1000 * statistics.median(cpu[args.base])
            after = 1000 * statistics.median(cpu["this checkout"])
            ratios.append(before / after)
            print(
                f"| `{aggregator}` | {objective} | {before:.1f} | {after:.1f} | {before / after:.2f}× |"
            )
            rows.append(
                {
                    "machine": machine(),
                    "modalities": m,
                    "batch_size": args.batch_size,
                    "aggregator": aggregator,
                    "objective": objective,
                    "base": args.base,
                    "base_median_cpu_ms": f"{before:.2f}",
                    "median_cpu_ms": f"{after:.2f}",
                    "ratio": f"{before / after:.3f}",
                }
            )
    geomean = math.exp(statistics.fmean(math.log(r) for r in ratios))
    print(f"geometric mean of the ratios: {geomean:.3f}×")
    write_csv(args.out, rows)


if __name__ == "__main__":
    main()
