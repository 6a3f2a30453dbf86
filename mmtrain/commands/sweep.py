"""`mmtrain sweep CONFIG --grid KEY=V1,V2 ... --seeds ...`: a search over config keys on
Ray Tune, each trial the Ray Train run of `mmtrain train --ray`, then `mmtrain eval` of every
trial and the compare table (mean ± std over seeds)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmtrain.evaluation.runner import EvalOptions
    from mmtrain.sweep import SweepOptions


def add_ray_trial_options(p: argparse.ArgumentParser) -> None:
    """The options of how trials run on Ray, shared with `mmtrain compare --ray`."""
    p.add_argument(
        "--address",
        help="a running Ray cluster (HOST:PORT, or auto); default: a local one for this sweep",
    )
    p.add_argument("--workers-per-trial", type=int, default=1, metavar="N")
    p.add_argument(
        "--cpus-per-trial", type=float, default=1.0, metavar="C", help="shared by its workers"
    )
    p.add_argument(
        "--gpus-per-trial", type=float, default=0.0, metavar="G", help="shared by its workers"
    )
    p.add_argument(
        "--max-concurrent-trials",
        type=int,
        metavar="N",
        help="default: as many as the cluster's CPUs and GPUs hold",
    )
    p.add_argument(
        "--max-failures",
        type=int,
        default=2,
        help="restarts of a trial's workers from its last checkpoint (default 2)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the sweep in --out after its driver died: finished trials are kept, "
        "unfinished ones continue from their last checkpoint",
    )


def add_eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--is-samples", type=int, help="importance samples for log-likelihoods")
    p.add_argument("--max-examples", type=int, default=1000, help="test rows evaluated")
    p.add_argument("--classifier-epochs", type=int, default=5)
    p.add_argument("--pictures", action="store_true", help="draw each run's eval pictures")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="search config values on Ray Tune and write the comparison table",
        description="Run every combination of --grid values × --seeds (or --search random "
        "over --range distributions) as Ray Tune trials, each a Ray Train run of the training "
        "loop; evaluate each trial with `mmtrain eval` (its best checkpoint when the config "
        "keeps one) and write OUT/compare.md, compare.csv, compare.png and table.csv (mean ± "
        "std over seeds). model.aggregator and model.objective are the table's rows and "
        "groups; other grid keys split the rows.",
    )
    p.add_argument("config", type=Path, help="the base YAML config")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="config values to try, e.g. model.aggregator=sum_pooling,poe (repeatable)",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="N")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the config for every trial (repeatable)",
    )
    p.add_argument("--steps", type=int, help="training steps per trial (default: the config's)")
    p.add_argument(
        "--search",
        choices=["grid", "random", "optuna"],
        default="grid",
        help="grid: every --grid point; random: --trials samples of the --range keys per "
        "point; optuna: --trials trials of Optuna's TPE over the --range keys, one grid point "
        "(needs `pip install optuna` and --metric)",
    )
    p.add_argument(
        "--trials", type=int, default=1, help="random / optuna search: trials per grid point"
    )
    p.add_argument(
        "--range",
        dest="ranges",
        action="append",
        default=[],
        metavar="KEY=DIST:LOW:HIGH",
        help="random search: e.g. optim.lr=loguniform:1e-4:1e-2 (uniform, loguniform, randint)",
    )
    p.add_argument(
        "--asha",
        metavar="METRIC",
        help="stop poor trials early (ASHA) by this validation metric, e.g. val/is_ll",
    )
    p.add_argument(
        "--metric",
        metavar="METRIC",
        help="--search optuna: the validation metric to optimise (default: --asha's)",
    )
    p.add_argument(
        "--mode", choices=["max", "min"], default="max", help="of --asha's and --metric's metric"
    )
    add_ray_trial_options(p)
    p.add_argument("--out", type=Path, help="output directory (default runs/sweep-CONFIG)")
    add_eval_options(p)
    p.add_argument("--force", action="store_true", help="rerun cells that already have results")
    p.add_argument("--quiet", action="store_true", help="no progress output from Ray")


def sweep_options(args: argparse.Namespace, **extra: Any) -> SweepOptions:
    from mmtrain.sweep import Range, SweepOptions

    return SweepOptions(
        workers_per_trial=args.workers_per_trial,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_concurrent_trials=args.max_concurrent_trials,
        max_failures=args.max_failures,
        address=args.address,
        resume=args.resume,
        quiet=args.quiet,
        ranges=[Range.parse(text) for text in getattr(args, "ranges", [])],
        **extra,
    )


def eval_options(args: argparse.Namespace) -> EvalOptions:
    from mmtrain.evaluation.runner import EvalOptions

    defaults = EvalOptions()
    return EvalOptions(
        is_samples=args.is_samples or defaults.is_samples,
        max_examples=args.max_examples or None,
        classifier_epochs=args.classifier_epochs,
        pictures=args.pictures,
    )


def print_outcome(outcome: dict[str, Any]) -> None:
    from mmtrain.compare import formatted_rows
    from mmtrain.report import compare_table

    compare_table(
        formatted_rows(outcome["summary"], outcome["columns"]),
        [(column.key, column.label) for column in outcome["columns"]],
        notes=outcome["notes"],
    )
    print(json.dumps({k: outcome[k] for k in ("markdown", "csv", "tidy_csv", "json", "plot")}))


def run(args: argparse.Namespace) -> int:
    from mmtrain.sweep import parse_grid, run_sweep, sweep_settings

    settings = sweep_settings(
        args.config,
        parse_grid(args.grid),
        list(args.seeds),
        list(args.overrides),
        steps=args.steps,
        out=args.out or Path("runs") / f"sweep-{args.config.stem}",
        is_samples=args.is_samples,
        eval_options=eval_options(args),
        force=args.force,
        progress=not args.quiet,
    )
    options = sweep_options(
        args,
        search=args.search,
        trials=args.trials,
        asha=args.asha,
        metric=args.metric,
        mode=args.mode,
    )
    print_outcome(run_sweep(settings, options))
    return 0
