"""`run_sweep`: a grid (or a random or Optuna search) over config keys on Ray Tune, each
trial the Ray Train run that `mmtrain train --ray` starts, then `mmtrain eval` of every trial
and the compare table (mean ± std over seeds).

Ray Train's documented way to tune a trainer (Train V2, Ray's default since 2.5x): each
Tune trial runs a small driver function (`run_trial`) that builds the `TorchTrainer` of
`mmtrain.train.ray_launcher.build_trainer` and calls `fit()`; `TuneReportCallback` hands the
loop's checkpoint reports (training and validation metrics) to Tune, where an optional
`ASHAScheduler` stops the worst trials early::

    Tuner(run_trial, param_space={"cell": grid_search([...]), "ranges": {...}},
          tune_config=TuneConfig(num_samples, scheduler, max_concurrent_trials),
          run_config=RunConfig(storage_path=OUT/ray, name))
      └─ trial: TorchTrainer(train_loop_per_worker, ScalingConfig(workers per trial),
                             RunConfig(storage_path=OUT/ray/NAME/train, name=CELL,
                                       FailureConfig(max_failures)))

Every trial appends its start and end to `OUT/trials/<cell>.jsonl`; `OUT/trials.csv` is one
row per attempt (`trial_rows`), and `unfinished_cells` are the ones a `--resume` reruns.

Failures: a dead worker makes Ray Train restart the trial's worker group from its last
reported checkpoint (`--max-failures`). A dead driver leaves the Tune experiment in
OUT/ray/NAME; `--resume` restores it (`Tuner.restore`): finished trials stay finished, and
each unfinished one runs again under the same Ray Train run name, which Ray Train continues
from that run's last registered checkpoint.

Trials are cells of `mmtrain.compare` (aggregator, objective, seed, and the other grid
keys as `key=value` overrides): the config of each is `compare.trained_config`, a cell saved
under OUT/cells with the same settings is reused and not run again, and after tuning the
driver evaluates each trial's run directory (`compare.evaluate_trained_run`: the best
checkpoint when the run kept one) and writes the tables with `compare.render`. On a cluster
of several machines OUT must be a folder every node sees (a shared file system).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mmtrain.compare import (
    Cell,
    CompareSettings,
    config_file,
    evaluate_trained_run,
    render,
    row_label,
    save_cell,
    saved_cell,
    trained_config,
)
from mmtrain.config import load_config
from mmtrain.errors import ConfigError, MMTrainError
from mmtrain.train import ray_launcher

Log = Callable[[str], None]
logger = logging.getLogger(__name__)

#: the driver's record of a sweep: its Tune experiment name, settings and trials
SWEEP_FILE = "sweep.json"
#: one JSON line per trial start and end, per cell: `OUT/trials/<cell>.jsonl`
TRIALS_DIR = "trials"
#: grid keys that are the compare table's own dimensions
AGGREGATOR_KEY, OBJECTIVE_KEY = "model.aggregator", "model.objective"
#: `--search`: every grid point; random samples of `--range`s; Optuna's TPE over them
SEARCHES = ("grid", "random", "optuna")
#: `--range KEY=DIST:LOW:HIGH` distributions (Ray Tune's sampling functions)
DISTRIBUTIONS = ("uniform", "loguniform", "randint")
#: bytes of memory a trial's driver function asks Ray for (it holds no CPU)
TRIAL_DRIVER_MEMORY = 64 * 2**20


class SweepFailed(MMTrainError):
    """Some trials of a sweep failed (after their restarts); the others were evaluated."""


def _stderr(message: str) -> None:
    logger.info(message)


# ----------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class Range:
    """`--range optim.lr=loguniform:1e-4:1e-2`: a key sampled by a random search."""

    key: str
    distribution: str
    low: float
    high: float

    @classmethod
    def parse(cls, text: str) -> Range:
        key, _, spec = text.partition("=")
        parts = spec.split(":")
        if not key or len(parts) != 3 or parts[0] not in DISTRIBUTIONS:
            raise ConfigError(
                f"--range expects KEY=DIST:LOW:HIGH with DIST one of {', '.join(DISTRIBUTIONS)}"
                f", e.g. optim.lr=loguniform:1e-4:1e-2; got {text!r}"
            )
        try:
            low, high = float(parts[1]), float(parts[2])
        except ValueError:
            raise ConfigError(f"--range {text}: LOW and HIGH must be numbers") from None
        if not low < high or (parts[0] == "loguniform" and low <= 0):
            raise ConfigError(f"--range {text}: needs 0 < LOW < HIGH for loguniform, LOW < HIGH")
        return cls(key.strip(), parts[0], low, high)

    def domain(self) -> Any:
        from ray import tune

        if self.distribution == "randint":
            return tune.randint(int(self.low), int(self.high))
        return getattr(tune, self.distribution)(self.low, self.high)

    def override(self, value: float) -> str:
        # Six significant digits: the label, the folder name and the config agree.
        text = str(int(value)) if self.distribution == "randint" else f"{float(value):.6g}"
        return f"{self.key}={text}"


def split_values(text: str) -> list[str]:
    """`sum_pooling,poe` → two values; commas inside brackets stay (`[1,2],[3]`)."""
    values, depth, current = [], 0, ""
    for char in text:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return [v for v in values if v]


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """`--grid KEY=V1,V2` options as {key: values} (values as `--set` reads them, YAML)."""
    grid: dict[str, list[str]] = {}
    for text in items:
        key, sep, values = text.partition("=")
        key = key.strip()
        if not sep or not key or not split_values(values):
            raise ConfigError(f"--grid expects KEY=VALUE[,VALUE...], got {text!r}")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice")
        if key in ("seed", "output_dir"):
            raise ConfigError(f"--grid {key}: use --seeds for seeds; output_dir is per trial")
        grid[key] = split_values(values)
    return grid


def sweep_settings(
    config: Path,
    grid: dict[str, list[str]],
    seeds: list[int],
    overrides: list[str] | None = None,
    **settings: Any,
) -> CompareSettings:
    """The compare settings of a sweep of `config`: `model.aggregator` and
    `model.objective` of the grid (else the config's own) are the table's aggregators and
    objectives, every other grid key splits rows into variants (their product)."""
    base = load_config(config, overrides)
    aggregators = grid.get(AGGREGATOR_KEY, [base.model.aggregator])
    objectives = grid.get(OBJECTIVE_KEY, [base.model.objective])
    others = {k: v for k, v in grid.items() if k not in (AGGREGATOR_KEY, OBJECTIVE_KEY)}
    variants = [
        tuple(f"{key}={value}" for key, value in zip(others, values))
        for values in itertools.product(*others.values())
    ]
    settings.setdefault("init", base.model.init)
    return CompareSettings(
        experiment=config.stem,
        aggregators=list(aggregators),
        objectives=list(objectives),
        seeds=list(seeds),
        config=config,
        overrides=list(overrides or []),
        variants=variants,
        **settings,
    )


def grid_cells(settings: CompareSettings) -> list[Cell]:
    """Every cell of the grid, in table order."""
    return [
        Cell(aggregator, objective, seed, variant)
        for aggregator in settings.aggregators
        for variant in settings.variants
        for objective in settings.objectives
        for seed in settings.seeds
    ]


@dataclass
class SweepOptions:
    """How the trials run: the search, the scheduler, the resources and the cluster."""

    search: str = "grid"
    trials: int = 1
    ranges: list[Range] = field(default_factory=list)
    asha: str | None = None
    #: what `--search optuna` optimises (default: `--asha`'s metric)
    metric: str | None = None
    mode: str = "max"
    workers_per_trial: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent_trials: int | None = None
    max_failures: int = 2
    address: str | None = None
    resume: bool = False
    quiet: bool = False

    @property
    def objective_metric(self) -> str | None:
        """The validation metric the search or the scheduler watches, if any."""
        return self.metric or self.asha

    def validate(self) -> SweepOptions:
        if self.search not in SEARCHES:
            raise ConfigError(f"--search must be one of {', '.join(SEARCHES)}, got {self.search!r}")
        if self.search == "grid" and (self.ranges or self.trials != 1):
            raise ConfigError("--range and --trials need --search random or optuna")
        if self.search != "grid" and not self.ranges:
            raise ConfigError(
                f"--search {self.search} needs at least one --range KEY=DIST:LOW:HIGH"
            )
        if self.search == "optuna" and self.objective_metric is None:
            raise ConfigError("--search optuna needs --metric METRIC (or --asha METRIC)")
        if self.metric is not None and self.search != "optuna":
            raise ConfigError("--metric is what --search optuna optimises; use --asha for ASHA")
        if self.trials < 1 or self.workers_per_trial < 1:
            raise ConfigError("--trials and --workers-per-trial must be at least 1")
        if self.cpus_per_trial < 0 or self.gpus_per_trial < 0:
            raise ConfigError("--cpus-per-trial and --gpus-per-trial must be ≥ 0")
        if self.mode not in ("max", "min"):
            raise ConfigError(f"--mode must be max or min, got {self.mode!r}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ConfigError("--max-concurrent-trials must be at least 1")
        return self

    def worker_resources(self) -> dict[str, float]:
        """A trial's CPUs and GPUs shared evenly by its workers."""
        per = {"CPU": self.cpus_per_trial / self.workers_per_trial}
        if self.gpus_per_trial > 0:
            per["GPU"] = self.gpus_per_trial / self.workers_per_trial
        return per

    def signature(self) -> dict[str, Any]:
        """What a resumed sweep must agree on (resources and the cluster may change)."""
        return {
            "search": self.search,
            "trials": self.trials,
            "ranges": [asdict(r) for r in self.ranges],
            "asha": self.asha,
            "metric": self.metric,
            "mode": self.mode,
        }


def asha_overrides(settings: CompareSettings, options: SweepOptions) -> list[str]:
    """The checks and config of `--asha METRIC`: the metric is one the loop's validation
    reports, every checkpoint report carries it (checkpoints on validation steps), and the
    run keeps its best checkpoint by it (unless the config keeps one by another)."""
    from mmtrain.train.monitor import canonical_metric, check_metric

    name = options.objective_metric
    if name is None:
        return []
    flag = "--asha" if options.metric is None else "--metric"
    metric = canonical_metric(name)
    for objective in settings.objectives:
        check_metric(metric, objective, flag)
    base = load_config(config_file(settings), settings.overrides)
    every, checkpoints = base.train.eval_every, base.train.checkpoint_every
    if not every or not checkpoints or checkpoints % every:
        raise ConfigError(
            f"{flag} {name} needs train.eval_every and a train.checkpoint_every that "
            f"is a multiple of it (each checkpoint report carries the validation); the config "
            f"has eval_every {every}, checkpoint_every {checkpoints}"
        )
    if base.train.keep_best is not None:
        return []
    return [f"train.keep_best.metric={metric}", f"train.keep_best.mode={options.mode}"]


def check_cells(settings: CompareSettings, cells: list[Cell], options: SweepOptions) -> None:
    """Build every trial's config before any trial starts: a bad key or value fails here
    with the schema's message (`did you mean …`)."""
    probe = [r.override(r.low) for r in options.ranges]
    for cell in cells:
        trained_config(settings, replace(cell, overrides=cell.overrides + tuple(probe)), Path("."))


# ----------------------------------------------------------------------------- the trial


@dataclass
class TrialPlan:
    """What every trial needs from the driver (sent once, through `tune.with_parameters`)."""

    settings: CompareSettings
    options: SweepOptions
    train_storage: str

    def cell(self, params: dict[str, Any]) -> Cell:
        point = params["cell"]
        sampled = params.get("ranges", {})
        extra = tuple(r.override(sampled[r.key]) for r in self.options.ranges)
        return Cell(
            point["aggregator"],
            point["objective"],
            int(point["seed"]),
            tuple(point["overrides"]) + extra,
        )


def _record(out: Path, cell: Cell, event: dict[str, Any]) -> None:
    path = out / TRIALS_DIR / f"{cell.key}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(event) + "\n")


def trial_events(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Every trial's start and end records, by cell key (`OUT/trials/*.jsonl`)."""
    return {
        path.stem: [json.loads(line) for line in path.read_text().splitlines() if line]
        for path in sorted((out / TRIALS_DIR).glob("*.jsonl"))
    }


def run_trial(params: dict[str, Any], plan: TrialPlan) -> None:
    """One Tune trial: the cell's config, then its Ray Train run (continued from its last
    registered checkpoint when Ray Train finds the run in storage: a restored sweep)."""
    import ray
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from mmtrain.compare import cell_path
    from mmtrain.train import rundir

    settings, options = plan.settings, plan.options
    cell = plan.cell(params)
    config = trained_config(settings, cell, settings.out / "runs" / cell.key)
    output = Path(config.output_dir)
    continued = (Path(plan.train_storage) / cell.key / "checkpoint_manager_snapshot.json").exists()
    if not continued:
        rundir.check_or_move_aside(output, None, overwrite=True)
    cell_path(settings, cell).unlink(missing_ok=True)
    trial_id = tune.get_context().get_trial_id()
    _record(
        settings.out,
        cell,
        {
            "event": "start",
            "time": time.time(),
            "trial_id": trial_id,
            "node_id": ray.get_runtime_context().get_node_id(),
            "continues_ray_train_run": continued,
        },
    )
    trainer = ray_launcher.build_trainer(
        config,
        name=cell.key,
        storage=plan.train_storage,
        num_workers=options.workers_per_trial,
        resources=options.worker_resources(),
        max_failures=options.max_failures,
        quiet=options.quiet,
        callbacks=[TuneReportCallback()],
    )
    result = trainer.fit().return_value or {}
    _record(
        settings.out,
        cell,
        {
            "event": "end",
            "time": time.time(),
            "trial_id": trial_id,
            "steps": result.get("steps"),
            "resumed_from_ray_checkpoint": result.get("resumed_from_ray_checkpoint"),
            "workers": result.get("workers"),
        },
    )


def _trial_dirname(trial: Any) -> str:
    point = trial.config["cell"]
    cell = Cell(point["aggregator"], point["objective"], point["seed"], tuple(point["overrides"]))
    return f"{cell.key}-{trial.trial_id}"


# ----------------------------------------------------------------------------- the driver


def _tuner(plan: TrialPlan, cells: list[Cell], name: str, concurrent: int) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    settings, options = plan.settings, plan.options
    scheduler = None
    if options.asha is not None:
        from mmtrain.train.monitor import canonical_metric

        base = load_config(config_file(settings), settings.overrides)
        steps = settings.steps or base.train.steps or 10**9
        scheduler = ASHAScheduler(
            time_attr="step",
            metric=canonical_metric(options.asha),
            mode=options.mode,
            max_t=steps,
            grace_period=min(base.train.checkpoint_every, steps),
            # A trial that reaches max_t ends by itself (its Ray Train run returns, the
            # loop writes its summary and the trial its end record); True would stop it at
            # its last report instead.
            stop_last_trials=False,
        )
    points = [{**asdict(c), "overrides": list(c.overrides)} for c in cells]
    search_alg = optuna_searcher(options) if options.search == "optuna" else None
    param_space: dict[str, Any] = {
        # Ray Tune's searchers take no grid_search: with Optuna the one point is a constant.
        "cell": points[0] if search_alg is not None else tune.grid_search(points)
    }
    if options.ranges:
        param_space["ranges"] = {r.key: r.domain() for r in options.ranges}
    return tune.Tuner(
        _trainable(plan),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            num_samples=options.trials,
            search_alg=search_alg,
            scheduler=scheduler,
            max_concurrent_trials=concurrent,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(settings.out.resolve() / "ray"),
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            verbose=0 if options.quiet else 1,
        ),
    )


def check_search(cells: list[Cell], options: SweepOptions) -> None:
    """`--search optuna`, before Ray starts: Optuna is installed, and the sweep has one
    grid point (Ray Tune's searchers take no grid)."""
    if options.search != "optuna":
        return
    optuna_searcher(options)
    if len(cells) != 1:
        raise ConfigError(
            f"--search optuna tunes the --range keys of one grid point (one aggregator, "
            f"objective and seed, no other --grid keys); this sweep has {len(cells)}: run one "
            f"sweep per point, or use --search random"
        )


def optuna_searcher(options: SweepOptions) -> Any:
    """Ray Tune's `OptunaSearch` (TPE) on `options.objective_metric`, or a `ConfigError`
    that says how to install Optuna."""
    try:
        import optuna  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise ConfigError("--search optuna needs the optuna package: pip install optuna") from None
    from mmtrain.train.monitor import canonical_metric

    assert options.objective_metric is not None
    return OptunaSearch(metric=canonical_metric(options.objective_metric), mode=options.mode)


def _trainable(plan: TrialPlan) -> Any:
    from ray import tune

    # The trial's own function only drives the Ray Train run, whose workers hold the CPUs;
    # Tune refuses an empty request, so it asks for a little memory and no CPU.
    return tune.with_resources(
        tune.with_parameters(run_trial, plan=plan), {"CPU": 0, "memory": TRIAL_DRIVER_MEMORY}
    )


def _concurrency(options: SweepOptions, available: dict[str, float]) -> int:
    """`--max-concurrent-trials`, else as many trials as the cluster's CPUs and GPUs hold
    (Ray Tune does not see the resources of the Ray Train runs its trials start)."""
    if options.max_concurrent_trials is not None:
        return options.max_concurrent_trials
    fits = []
    for key, need in (("CPU", options.cpus_per_trial), ("GPU", options.gpus_per_trial)):
        if need > 0:
            fits.append(int(available.get(key, 0.0) // need + 1e-9))
    concurrent = min(fits) if fits else 1
    if concurrent < 1:
        raise ConfigError(
            f"one trial needs {options.cpus_per_trial:g} CPU and {options.gpus_per_trial:g} "
            f"GPU but the cluster has {available.get('CPU', 0):g} and {available.get('GPU', 0):g}"
        )
    return concurrent


def _sweep_record(settings: CompareSettings, options: SweepOptions) -> dict[str, Any]:
    return {
        "settings": settings.signature(),
        "grid": {
            "aggregators": settings.aggregators,
            "objectives": settings.objectives,
            "variants": [list(v) for v in settings.variants],
            "seeds": settings.seeds,
        },
        "options": options.signature(),
    }


def _experiment_name(settings: CompareSettings, options: SweepOptions) -> str:
    """A new Tune experiment name, or with `--resume` the saved one (same settings only)."""
    path = settings.out / SWEEP_FILE
    record = _sweep_record(settings, options)
    if not options.resume:
        return f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    if not path.is_file():
        raise ConfigError(
            f"--resume: {path} does not exist; no sweep was started in {settings.out}"
        )
    saved = json.loads(path.read_text())
    differing = sorted(
        key
        for section in ("settings", "grid", "options")
        for key in set(record[section]) | set(saved[section])
        if json.dumps(record[section].get(key)) != json.dumps(saved[section].get(key))
    )
    if differing:
        raise ConfigError(
            f"--resume: the sweep in {settings.out} was started with other settings "
            f"({', '.join(differing)} differ); rerun the same command with --resume"
        )
    return str(saved["name"])


def run_sweep(
    settings: CompareSettings, options: SweepOptions, log: Log = _stderr
) -> dict[str, Any]:
    """Tune every cell of `settings` that has no saved result (or restore the sweep with
    `options.resume`), evaluate the trials, and write the compare table (`render`)."""
    settings.validate()
    options.validate()
    if settings.simulated:
        raise ConfigError("a sweep trains with the training loop: give a config (not a simulation)")
    settings = _absolute(settings)
    settings = replace(
        settings, overrides=[*settings.overrides, *asha_overrides(settings, options)]
    )
    settings.out.mkdir(parents=True, exist_ok=True)
    cells = grid_cells(settings)
    check_search(cells, options)
    check_cells(settings, cells, options)
    cached = {c: s for c in cells if (s := saved_cell(settings, c, log)) is not None}
    todo = [c for c in cells if c not in cached]
    name = _experiment_name(settings, options)
    path = settings.out.resolve() / "ray" / name
    plan = TrialPlan(settings, options, str(path / "train"))
    (settings.out / SWEEP_FILE).write_text(
        json.dumps({"name": name, "path": str(path), **_sweep_record(settings, options)}, indent=1)
    )
    grid = _fit(settings, options, plan, todo, name, path, log)
    results, failed = _collect(settings, plan, grid, cached, log)
    if not results:
        raise SweepFailed(f"every trial failed: {'; '.join(failed)}")
    outcome = render_sweep(settings, results)
    outcome["trials"] = trial_events(settings.out)
    outcome["trials_csv"] = str(write_trial_table(settings.out))
    outcome["failed"] = failed
    if failed:
        raise SweepFailed(f"{len(failed)} trial(s) failed: " + "; ".join(failed))
    return outcome


def _fit(
    settings: CompareSettings,
    options: SweepOptions,
    plan: TrialPlan,
    todo: list[Cell],
    name: str,
    path: Path,
    log: Log,
) -> Any:
    """Run (or with `options.resume` restore) the Tune experiment of the `todo` cells; its
    result grid, or None when every cell was saved already."""
    import ray
    from ray import tune

    if not todo and not options.resume:
        return None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=ray_launcher.cluster_address(options.address), logging_level="warning")
    try:
        concurrent = _concurrency(options, ray.cluster_resources())
        if options.resume:
            rerun = unfinished_cells(todo, trial_events(settings.out))
            log(
                f"resuming the sweep in {path}: {len(todo) - len(rerun)} trial(s) finished, "
                f"{len(rerun)} to run: {', '.join(c.key for c in rerun) or 'none'}"
            )
            tuner = tune.Tuner.restore(
                str(path), _trainable(plan), resume_unfinished=True, restart_errored=True
            )
        else:
            log(
                f"{len(todo)} trial(s) × {options.trials} sample(s), {concurrent} at a time → {path}"
            )
            tuner = _tuner(plan, todo, name, concurrent)
        return tuner.fit()
    finally:
        if started_here:
            ray.shutdown()


def _collect(
    settings: CompareSettings,
    plan: TrialPlan,
    grid: Any,
    cached: dict[Cell, dict[str, Any]],
    log: Log,
) -> tuple[dict[Cell, dict[str, Any]], list[str]]:
    """The saved cells plus every finished trial, evaluated; and the failed trials' errors.
    A trial the scheduler stopped gets its end record here (its run never returned)."""
    results = dict(cached)
    failed = []
    events = trial_events(settings.out)
    for result in grid or []:
        cell = plan.cell(result.config)
        if result.error is not None:
            failed.append(f"{cell.key}: {str(result.error).strip().splitlines()[-1]}")
            continue
        if cell.key not in events or events[cell.key][-1]["event"] != "end":
            metrics = result.metrics or {}
            _record(
                settings.out,
                cell,
                {
                    "event": "end",
                    # Tune's time of the trial's last report
                    "time": float(metrics.get("timestamp") or time.time()),
                    "trial_id": metrics.get("trial_id"),
                    "steps": None if metrics.get("step") is None else int(metrics["step"]),
                    "stopped_by_scheduler": True,
                },
            )
        results[cell] = evaluate_trial(settings, cell, result.metrics or {}, log)
    return results, failed


def _absolute(settings: CompareSettings) -> CompareSettings:
    """The settings with the paths that trials read made absolute: trials run in folders
    of their own, possibly on other machines (which then need the same paths)."""
    base = load_config(config_file(settings), settings.overrides)
    source = ray_launcher.resolved_config(base)["data"]["source"]
    extra = [f"data.source={source}"] if source != base.data.source else []
    return replace(
        settings,
        config=None if settings.config is None else settings.config.resolve(),
        out=settings.out.resolve(),
        overrides=[*settings.overrides, *extra],
    )


def evaluate_trial(
    settings: CompareSettings, cell: Cell, metrics: dict[str, Any], log: Log
) -> dict[str, Any]:
    """The cell's saved result, else `mmtrain eval` of its run (a run the scheduler stopped
    early is evaluated where it stopped, its last reported metrics as its training result)."""
    saved = saved_cell(settings, cell, log)
    if saved is not None:
        return saved
    config = trained_config(settings, cell, settings.out / "runs" / cell.key)
    summary = Path(config.output_dir) / "summary.json"
    if summary.is_file():
        training = json.loads(summary.read_text())
    else:
        training = {**metrics, "seconds": metrics.get("time_total_s", math.nan)}
        training["stopped_by_scheduler"] = True
    started = time.perf_counter()
    log(f"{cell.key}: evaluating {config.output_dir}")
    outcome = evaluate_trained_run(settings, config, training, log)
    return save_cell(settings, cell, outcome, time.perf_counter() - started)


def render_sweep(settings: CompareSettings, results: dict[Cell, dict[str, Any]]) -> dict[str, Any]:
    """`compare.render` of the evaluated cells; a random search's sampled values become
    row variants."""
    variants = list(dict.fromkeys(cell.overrides for cell in results)) or [()]
    rows = [row_label(a, v) for a in settings.aggregators for v in variants]
    present = {cell.label for cell in results}
    shown = replace(settings, variants=variants, row_labels=[r for r in rows if r in present])
    ordered = dict(sorted(results.items(), key=lambda item: rows.index(item[0].label)))
    return render(shown, ordered)


def worker_pids(out: Path, cell: Cell) -> list[int]:
    """The process ids of a trial's Ray Train workers (for tests and demos that kill one)."""
    directory = out / "runs" / cell.key / ray_launcher.WORKER_FILES_DIR
    return [json.loads(p.read_text())["pid"] for p in sorted(directory.glob("rank-*.json"))]


def trial_rows(events: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per attempt of each trial (a start and, unless its driver died, its end),
    ordered by start: the cell, the Tune trial id, where its rank-0 worker ran, start and
    end (`time.time()`), steps, and the step its Ray Train run resumed from."""
    rows = []
    for key, records in events.items():
        attempt: dict[str, Any] | None = None
        for record in records:
            if record["event"] == "start":
                if attempt is not None:
                    rows.append(attempt)
                attempt = {
                    "cell": key,
                    "attempt": sum(1 for r in rows if r["cell"] == key) + 1,
                    "trial_id": record.get("trial_id"),
                    "continues_ray_train_run": record.get("continues_ray_train_run", False),
                    "start": record["time"],
                    "end": None,
                    "steps": None,
                    "resumed_from_step": None,
                    "worker_node": None,
                    "stopped_by_scheduler": False,
                }
            elif record["event"] == "end" and attempt is not None:
                workers = record.get("workers") or [{}]
                attempt.update(
                    end=record["time"],
                    steps=record.get("steps"),
                    resumed_from_step=record.get("resumed_from_ray_checkpoint"),
                    worker_node=workers[0].get("node_id"),
                    stopped_by_scheduler=bool(record.get("stopped_by_scheduler")),
                )
                rows.append(attempt)
                attempt = None
        if attempt is not None:
            rows.append(attempt)
    return sorted(rows, key=lambda row: row["start"])


def unfinished_cells(cells: list[Cell], events: dict[str, list[dict[str, Any]]]) -> list[Cell]:
    """The cells a resumed sweep still has to run: no trial end recorded after their last
    start (never started, or started and cut off with the driver)."""
    todo = []
    for cell in cells:
        records = events.get(cell.key, [])
        if not records or records[-1]["event"] != "end":
            todo.append(cell)
    return todo


def write_trial_table(out: Path) -> Path:
    """`OUT/trials.csv`: `trial_rows` of the trial records, times in seconds after the
    sweep's first trial start (the columns `start_s`, `end_s`, `seconds`)."""
    import csv

    rows = trial_rows(trial_events(out))
    origin = min((row["start"] for row in rows), default=0.0)
    path = out / "trials.csv"
    fields = [
        "cell",
        "attempt",
        "trial_id",
        "worker_node",
        "start_s",
        "end_s",
        "seconds",
        "steps",
        "continues_ray_train_run",
        "resumed_from_step",
        "stopped_by_scheduler",
    ]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        for row in rows:
            end = row["end"]
            writer.writerow(
                {
                    **{k: row[k] for k in fields if k in row},
                    "start_s": f"{row['start'] - origin:.1f}",
                    "end_s": "" if end is None else f"{end - origin:.1f}",
                    "seconds": "" if end is None else f"{end - row['start']:.1f}",
                }
            )
    return path


def overlapping(events: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str, float]]:
    """Pairs of trials whose first attempts ran at the same time, with the seconds shared."""
    spans = {}
    for key, records in events.items():
        starts = [r["time"] for r in records if r["event"] == "start"]
        ends = [r["time"] for r in records if r["event"] == "end"]
        if starts and ends:
            spans[key] = (starts[0], ends[0])
    pairs = []
    for (a, (a0, a1)), (b, (b0, b1)) in itertools.combinations(sorted(spans.items()), 2):
        shared = min(a1, b1) - max(a0, b0)
        if shared > 0:
            pairs.append((a, b, shared))
    return pairs


__all__ = [
    "Range",
    "SweepFailed",
    "check_search",
    "SweepOptions",
    "TrialPlan",
    "grid_cells",
    "overlapping",
    "parse_grid",
    "run_sweep",
    "sweep_settings",
    "trial_events",
    "trial_rows",
    "unfinished_cells",
    "write_trial_table",
]
