"""`mmtrain compare --experiment NAME --aggregators ... --objectives ... --seeds ...`: train
and evaluate a grid, then write a paper-shaped table (mean ± std over seeds) as markdown and
CSV, with a plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmtrain.commands.sweep import add_ray_trial_options, print_outcome, sweep_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    from mmtrain.commands import EXPERIMENT_NAMES as EXPERIMENTS

    names = (*EXPERIMENTS, "digits")
    p = sub.add_parser(
        "compare",
        help="run aggregator × objective × seeds and write a paper-style comparison table",
        description="Train and evaluate every aggregator × objective × seed, then write "
        "OUT/compare.md, OUT/compare.csv, OUT/compare.png (mean ± std over seeds), and "
        "every number of every run in one tidy table (OUT/table.csv, OUT/compare.json). The "
        "simulated experiments report their scripts' metrics (exact and IS log-likelihoods, "
        "training objective, ELBO, MCC); digits (or --config) trains with the training loop and reports "
        "`mmtrain eval`'s metrics. Runs are trained under OUT/runs; finished cells are kept "
        "under OUT/cells and reused.",
    )
    p.add_argument("--experiment", required=True, metavar="{" + ",".join(names) + "}")
    p.add_argument("--aggregators", nargs="+", required=True, metavar="NAME")
    p.add_argument("--objectives", nargs="+", default=["masked", "mixture"], metavar="NAME")
    p.add_argument("--seeds", nargs="+", type=int, default=[1], metavar="N")
    p.add_argument("--steps", type=int, help="training steps per run (default: the experiment's)")
    p.add_argument(
        "--modalities", type=int, help="number of modalities (linear-gaussian, ivae-multimodal)"
    )
    p.add_argument("--lr", type=float, help="learning rate of the simulated experiments")
    p.add_argument("--out", type=Path, help="output directory (default runs/compare-NAME)")
    p.add_argument("--is-samples", type=int, help="importance samples for log-likelihoods")
    p.add_argument(
        "--init",
        choices=["flax", "torch"],
        default="flax",
        help="network initialisation: flax (default; LeCun normal, zero biases) or torch",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="train each run from this YAML config instead (any dataset); the grid sets "
        "model.aggregator, model.objective, seed and output_dir",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of --config (repeatable)",
    )
    p.add_argument("--max-examples", type=int, default=1000, help="test rows evaluated")
    p.add_argument("--classifier-epochs", type=int, default=5)
    p.add_argument("--pictures", action="store_true", help="draw each run's eval pictures")
    p.add_argument("--force", action="store_true", help="rerun cells that already have results")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--ray",
        action="store_true",
        help="run the grid as a sweep on Ray Tune (`mmtrain sweep`), each cell a Ray Train "
        "trial; without it the cells run one after another in this process",
    )
    add_ray_trial_options(p)


def run(args: argparse.Namespace) -> int:
    from mmtrain.compare import CompareSettings, run_compare
    from mmtrain.evaluation.runner import EvalOptions
    from mmtrain.sweep import run_sweep

    defaults = EvalOptions()
    settings = CompareSettings(
        experiment=args.experiment,
        aggregators=list(args.aggregators),
        objectives=list(args.objectives),
        seeds=list(args.seeds),
        steps=args.steps,
        modalities=args.modalities,
        lr=args.lr,
        out=args.out or Path("runs") / f"compare-{args.experiment}",
        is_samples=args.is_samples,
        init=args.init,
        config=args.config,
        overrides=list(args.overrides),
        eval_options=EvalOptions(
            is_samples=args.is_samples or defaults.is_samples,
            max_examples=args.max_examples or None,
            classifier_epochs=args.classifier_epochs,
            pictures=args.pictures,
        ),
        force=args.force,
        progress=not args.quiet,
    )
    if args.ray:
        outcome = run_sweep(settings, sweep_options(args))
    else:
        ray_only = [
            f"--{name.replace('_', '-')}"
            for name in ("address", "max_concurrent_trials", "resume")
            if getattr(args, name)
        ]
        if ray_only:
            from mmtrain.cli import CLIError

            raise CLIError(f"mmtrain compare: {', '.join(ray_only)} needs --ray")
        outcome = run_compare(settings)
    print_outcome(outcome)
    return 0
