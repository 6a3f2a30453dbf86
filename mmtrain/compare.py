"""`run_compare`: train and evaluate a grid aggregator × objective × seed and summarise it in
one paper-shaped table (mean ± std over seeds) as markdown, CSV and JSON, with a plot.

The three simulated experiments run through `mmtrain.paper.run_experiment` (data in
memory, the scripts' models and metrics). `digits` (`configs/digits.yaml`, shipped as
`mmtrain.configs`) or any YAML config given with `--config` runs the training loop and then
`mmtrain eval` on each run; the coherence classifiers are trained once and shared by every
cell. Every run directory lies under `OUT/runs/`.

Every finished cell is saved as `cells/<aggregator>__<objective>__seed<k>.json`; a rerun
with the same settings reuses it (`force` retrains), so a long grid can be resumed.

The numbers of every cell form one tidy table (`grid_table`: aggregator, objective, seed,
subset, target, metric, value, n, stderr, see `mmtrain.evaluation.tables`); the mean ± std
over seeds is a groupby of it (`summary_frame`), and compare.md, compare.csv, table.csv,
compare.json and compare.png are written from these two frames.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmtrain.config import TrainConfig, load_config
from mmtrain.errors import ConfigError
from mmtrain.evaluation.runner import EvalOptions, _finite
from mmtrain.nets import check_init_scheme
from mmtrain.paper import EXPERIMENTS
from mmtrain.registry import AGGREGATORS, OBJECTIVES

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

#: experiments run through the training loop and `mmtrain eval`
TRAINED = ("digits",)

#: the columns that name a cell in the grid's tidy table
CELL_KEYS = ("aggregator", "objective", "seed")


@dataclass(frozen=True)
class Column:
    """One metric column of the comparison: the tidy rows it reads (`metric`, `target`),
    which of their numbers (`field`: `value` or `stderr`), its CSV `key` and its label."""

    key: str
    label: str
    metric: str
    target: str = ""
    field: str = "value"
    higher: bool = True

    @property
    def ranked(self) -> bool:
        """Whether the best mean is bold (standard errors are not ranked)."""
        return self.field == "value"


def _value(key: str, label: str, higher: bool = True) -> Column:
    return Column(key, label, key, higher=higher)


def _error(key: str, label: str, metric: str) -> Column:
    return Column(key, label, metric, field="stderr", higher=False)


_OBJECTIVES = [
    _value("masked_objective", "masked objective"),
    _value("mixture_objective", "mixture objective"),
    _value("elbo", "ELBO"),
]
#: the metric columns of each simulated experiment
SIMULATED_COLUMNS: dict[str, list[Column]] = {
    "linear-gaussian": [
        _value("exact_ll", "exact LL"),
        _value("is_ll", "IS LL"),
        _error("is_ll_se", "IS MC s.e.", "is_ll"),
        *_OBJECTIVES,
        _value("mle_ll", "PPCA MLE LL"),
        _value("rel_model_gap", "rel. model gap", higher=False),
        _value("rel_objective_gap", "rel. objective gap", higher=False),
        _value("rel_elbo_gap", "rel. ELBO gap", higher=False),
        _value("exact_ll_reference_quirk", "exact LL with σ̃² (ref. quirk)"),
    ],
    "ivae-bimodal": [
        _value("is_ll", "IS LL"),
        _error("is_ll_se", "IS MC s.e.", "is_ll"),
        *_OBJECTIVES,
        _value("mcc_strong_out", "MCC strong-out"),
        _value("mcc_weak_out", "MCC weak-out"),
    ],
    "ivae-multimodal": [
        _value("is_ll", "IS LL (train)"),
        _value("is_ll_test", "IS LL (test)"),
        _error("is_ll_test_se", "IS MC s.e. (test)", "is_ll_test"),
        *_OBJECTIVES,
        _value("mcc_strong_out", "MCC strong-out"),
        _value("mcc_pairs_strong_out", "MCC pairs strong-out"),
    ],
}

#: the keys of a simulated cell's `metrics` that are the Monte-Carlo standard error of another
SIMULATED_STDERR = {"is_ll_se": "is_ll", "is_ll_test_se": "is_ll_test"}

#: (metric, field, label) of the trained grid's columns, in order; a label with `{}` makes
#: one column per target modality found in the table
TRAINED_COLUMNS = (
    ("joint_ll", "value", "joint LL"),
    ("joint_ll", "stderr", "joint LL MC s.e."),
    ("observed_ll", "value", "observed LL"),
    ("masked_objective", "value", "held-out masked objective"),
    ("mixture_objective", "value", "held-out mixture objective"),
    ("elbo", "value", "held-out ELBO"),
    ("conditional_ll", "value", "cond. LL {}"),
    ("cross_coherence", "value", "cross coherence"),
    ("coherence", "value", "coherence → {}"),
    ("coherence_given", "value", "coherence, {} given"),
    ("joint_coherence", "value", "joint coherence"),
    ("latent_probe_all", "value", "latent probe (all)"),
    ("latent_probe", "value", "latent probe (mean S)"),
    ("exact_ll", "value", "exact LL"),
    ("mcc_strong_out", "value", "MCC strong-out"),
)

#: metrics plotted first when there are more than fit (the headline numbers)
PLOT_FIRST = (
    "joint_ll",
    "observed_ll",
    "exact_ll",
    "is_ll",
    "is_ll_test",
    "cross_coherence",
    "coherence_given/1",
    "joint_coherence",
    "latent_probe_all",
    "mcc_strong_out",
)

Log = Callable[[str], None]
logger = logging.getLogger(__name__)


def _stderr(message: str) -> None:
    logger.info(message)


@dataclass
class CompareSettings:
    """The grid and how each cell is trained and evaluated."""

    experiment: str
    aggregators: list[str]
    objectives: list[str] = field(default_factory=lambda: ["masked", "mixture"])
    seeds: list[int] = field(default_factory=lambda: [1])
    steps: int | None = None
    modalities: int | None = None
    lr: float | None = None
    out: Path = Path("runs/compare")
    is_samples: int | None = None
    init: str = "flax"
    config: Path | None = None
    overrides: list[str] = field(default_factory=list)
    eval_options: EvalOptions = field(default_factory=lambda: EvalOptions(pictures=False))
    force: bool = False
    progress: bool = True
    #: further `--set` overrides that split each aggregator's rows (a sweep's other grid
    #: keys, e.g. `("optim.lr=0.001",)`); `[()]` when there are none
    variants: list[tuple[str, ...]] = field(default_factory=lambda: [()])
    #: the table's rows when not every aggregator × variant ran (a random search)
    row_labels: list[str] | None = None

    def validate(self) -> CompareSettings:
        if self.experiment not in (*EXPERIMENTS, *TRAINED) and self.config is None:
            raise ConfigError(
                f"unknown experiment {self.experiment!r}; choose one of "
                f"{', '.join((*EXPERIMENTS, *TRAINED))}, or give --config for your own data"
            )
        if not self.aggregators or not self.objectives or not self.seeds:
            raise ConfigError("compare needs at least one aggregator, objective and seed")
        for name in self.aggregators:
            AGGREGATORS.get(name)
        for name in self.objectives:
            OBJECTIVES.get(name)
        if (self.modalities is not None or self.lr is not None) and not self.simulated:
            raise ConfigError(
                "--modalities and --lr apply to the simulated experiments; for trained runs "
                "use --set optim.lr=..."
            )
        if self.modalities is not None and self.modalities < 1:
            raise ConfigError(f"--modalities must be at least 1, got {self.modalities}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {self.steps}")
        check_init_scheme(self.init)
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seeds repeats a seed: {self.seeds}")
        return self

    @property
    def simulated(self) -> bool:
        return self.experiment in EXPERIMENTS and self.config is None

    @property
    def name(self) -> str:
        """What ran: the experiment, or with `--config` that file's stem (its data, not the
        experiment's, were trained on)."""
        return self.experiment if self.config is None else self.config.stem

    @property
    def title(self) -> str:
        """The table's and plot's title: `name`, with the config file when there is one."""
        return self.name if self.config is None else f"{self.name} ({self.config.name})"

    @property
    def rows(self) -> list[str]:
        """The row labels of the table, in grid order: one per aggregator and variant."""
        if self.row_labels is not None:
            return list(self.row_labels)
        return [row_label(a, v) for a in self.aggregators for v in self.variants]

    def signature(self) -> dict[str, Any]:
        """What a saved cell must agree on to be reused."""
        return {
            "experiment": self.experiment,
            "steps": self.steps,
            "modalities": self.modalities,
            "lr": self.lr,
            "is_samples": self.is_samples,
            "init": self.init,
            "config": None if self.config is None else str(self.config),
            "overrides": list(self.overrides),
            "eval": _eval_signature(self.eval_options),
        }


#: evaluation options added after cells were first saved: part of a cell's signature only
#: when set away from their defaults, so that the cells saved before them are still reused
#: (they add numbers, FID and coherence by size, and change none of the earlier ones)
LATER_EVAL_OPTIONS = ("coherence_subsets_per_size", "fid_features", "fid_weights", "fid_samples")


def _eval_signature(options: EvalOptions) -> dict[str, Any]:
    values = options.to_dict()
    defaults = type(options)().to_dict()
    return {
        k: v
        for k, v in values.items()
        if k != "pictures" and not (k in LATER_EVAL_OPTIONS and v == defaults[k])
    }


def row_label(aggregator: str, overrides: tuple[str, ...] = ()) -> str:
    """`sum_pooling`, or `sum_pooling (optim.lr=0.001)` for a variant."""
    return f"{aggregator} ({', '.join(overrides)})" if overrides else aggregator


@dataclass(frozen=True)
class Cell:
    """One run of the grid; `overrides` are a sweep's further config values (`key=value`)."""

    aggregator: str
    objective: str
    seed: int
    overrides: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        variant = "".join(f"__{_slug(text)}" for text in self.overrides)
        return f"{self.aggregator}__{self.objective}{variant}__seed{self.seed}"

    @property
    def label(self) -> str:
        return row_label(self.aggregator, self.overrides)


def _slug(text: str) -> str:
    """A config override as a folder-name part: `optim.lr=0.001` → `optim.lr-0.001`."""
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text.replace("=", "-"))


# ----------------------------------------------------------------------------- one cell


def simulated_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of a `run_experiment` result as one flat mapping (a cell's `metrics`)."""
    out = {k: float(v) for k, v in result.items() if isinstance(v, int | float) and k != "steps"}
    mcc = result.get("mcc")
    if isinstance(mcc, dict):
        out |= {f"mcc_{k}": float(v) for k, v in mcc.items()}
    pairs = result.get("mcc_pairs")
    if isinstance(pairs, dict) and pairs:
        values = [float(v["strong_out"]) for v in pairs.values()]
        out["mcc_pairs_strong_out"] = sum(values) / len(values)
    return out


def run_simulated_cell(settings: CompareSettings, cell: Cell) -> dict[str, Any]:
    """One cell of a simulated experiment: its paper config with the cell's aggregator,
    objective and seed, the aggregator's component limit respected (PoE: K = 1), its run
    directory under `OUT/runs/`."""
    from mmtrain.paper import ExperimentOptions, experiment_config, run_experiment

    components = None
    limit = AGGREGATORS.get(cell.aggregator).max_components
    if limit is not None:
        base = experiment_config(settings.experiment)
        components = min(base.model.prior.components, limit)
    options = ExperimentOptions(
        aggregator=cell.aggregator,
        objective=cell.objective,
        seed=cell.seed,
        steps=settings.steps,
        is_samples=settings.is_samples,
        modalities=settings.modalities,
        lr=settings.lr,
        init=settings.init,
        components=components,
        output_dir=str(settings.out / "runs" / cell.key),
    )
    config = experiment_config(settings.experiment, options)
    result = run_experiment(settings.experiment, config, progress=settings.progress)
    return {"metrics": simulated_metrics(result), "result": result}


def config_file(settings: CompareSettings) -> Path:
    """The YAML a trained cell starts from: `--config`, or the shipped `configs/digits.yaml`."""
    if settings.config is not None:
        return settings.config
    return Path(str(resources.files("mmtrain.configs") / "digits.yaml"))


def trained_config(settings: CompareSettings, cell: Cell, run_dir: Path) -> TrainConfig:
    """The config of a trained cell: the config file (`config_file`) with the `--set`
    overrides, then the cell's aggregator, objective, seed, steps and output directory.

    An aggregator other than the config's gets the options its class derives from the
    config's width (`options_for_width`), not the config's; an aggregator with a component
    limit (`max_components`) gets a prior within it. On digits (no `--config`), aggregators
    with a mixture head get a 5-component learned prior and the held-out evaluation runs six
    times per run."""
    path = config_file(settings)
    base = load_config(path, settings.overrides)
    aggregator = AGGREGATORS.get(cell.aggregator)
    overrides = [
        *settings.overrides,
        *cell.overrides,
        f"model.aggregator={cell.aggregator}",
        f"model.objective={cell.objective}",
        f"seed={cell.seed}",
        f"output_dir={run_dir}",
        f"model.init={settings.init}",
    ]
    if cell.aggregator != base.model.aggregator:
        width = base.model.aggregator_width or base.model.feature_dim
        overrides += ["model.aggregator_options={}", f"model.aggregator_width={width}"]
    if settings.steps is not None:
        overrides += [f"train.steps={settings.steps}", "train.epochs=null"]
    if settings.config is None:
        steps = settings.steps or base.train.steps or 3000
        overrides.append(f"train.eval_every={max(1, steps // 6)}")
        if aggregator.mixture_head:
            overrides += ["model.prior.kind=mixture", "model.prior.components=5"]
    limit = aggregator.max_components
    if limit is not None and base.model.prior.components > limit:
        overrides.append(f"model.prior.components={limit}")
        if limit == 1:
            overrides.append("model.prior.kind=fixed")
    return load_config(path, overrides)


def run_trained_cell(settings: CompareSettings, cell: Cell, log: Log) -> dict[str, Any]:
    """Train a cell with the training loop in this process, then `evaluate_trained_run`."""
    from mmtrain.train.loop import train

    run_dir = settings.out / "runs" / cell.key
    config = trained_config(settings, cell, run_dir)
    # A cell that runs again (--force, other settings, an interrupted run) starts afresh;
    # the earlier attempt is moved aside, not mixed in.
    training = train(config, progress=settings.progress, overwrite=True)
    return evaluate_trained_run(settings, config, training, log)


def evaluate_trained_run(
    settings: CompareSettings, config: TrainConfig, training: dict[str, Any], log: Log
) -> dict[str, Any]:
    """`mmtrain eval` of a trained cell's run directory (`config.output_dir`; its best
    checkpoint when the run kept one) with the grid's shared classifiers, and the numbers a
    cell saves: `metrics`, the tidy `table` (with the training time and held-out
    objectives of `training`, the loop's result), the eval folder and the training result."""
    from mmtrain.evaluation.runner import evaluate_checkpoint
    from mmtrain.evaluation.tables import records, row, tidy

    run_dir = Path(config.output_dir)
    options = replace(
        settings.eval_options,
        classifier_dir=settings.eval_options.classifier_dir or settings.out / "classifiers",
    )
    results = evaluate_checkpoint(run_dir, run_dir / "eval", None, options, log)
    extra = [row("train_seconds", float(training["seconds"]))]
    extra += [
        row(key, float(training[f"eval/{key}"]))
        for key in ("masked_objective", "mixture_objective", "elbo")
        if f"eval/{key}" in training
    ]
    table = [*results["headline"], *records(tidy(extra))]
    metrics = dict(results["summary"]) | {r["metric"]: r["value"] for r in records(tidy(extra))}
    return {
        "metrics": metrics,
        "table": table,
        "aggregator_options": dict(config.model.aggregator_options),
        "eval": str(run_dir / "eval"),
        "training": _finite(training),
    }


def run_cell(settings: CompareSettings, cell: Cell, log: Log) -> dict[str, Any]:
    """Run one cell, or reuse its saved result when the settings match (`saved_cell`)."""
    saved = saved_cell(settings, cell, log)
    if saved is not None:
        return saved
    log(f"{cell.key}: running")
    started = time.perf_counter()
    if settings.simulated:
        outcome = run_simulated_cell(settings, cell)
    else:
        outcome = run_trained_cell(settings, cell, log)
    return save_cell(settings, cell, outcome, time.perf_counter() - started)


def cell_path(settings: CompareSettings, cell: Cell) -> Path:
    return settings.out / "cells" / f"{cell.key}.json"


def saved_cell(settings: CompareSettings, cell: Cell, log: Log) -> dict[str, Any] | None:
    """The cell's saved result when it was made with the same settings (a trained cell
    also needs its tidy `table`, which cells saved before it existed lack) and `force` is
    off; else None."""
    path = cell_path(settings, cell)
    if path.is_file() and not settings.force:
        saved = json.loads(path.read_text())
        if saved.get("signature") == settings.signature() and (
            settings.simulated or "table" in saved
        ):
            log(f"{cell.key}: reusing {path}")
            return saved
    return None


def save_cell(
    settings: CompareSettings, cell: Cell, outcome: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """Write `cells/<key>.json`: the cell, the settings' signature, `seconds` and `outcome`."""
    saved = {
        "cell": asdict(cell),
        "signature": settings.signature(),
        "seconds": seconds,
        **outcome,
    }
    path = cell_path(settings, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(saved), indent=1))
    return saved


# ----------------------------------------------------------------------------- the tables


def cell_records(saved: dict[str, Any]) -> list[dict[str, Any]]:
    """The tidy rows of one saved cell: a trained cell's `table`; for a simulated cell, its
    `metrics` with each Monte-Carlo standard error beside the number it belongs to."""
    from mmtrain.evaluation.tables import row

    if "table" in saved:
        return list(saved["table"])
    metrics = saved["metrics"]
    errors = {SIMULATED_STDERR[k]: v for k, v in metrics.items() if k in SIMULATED_STDERR}
    return [
        row(key, value, stderr=errors.get(key))
        for key, value in metrics.items()
        if key not in SIMULATED_STDERR
    ]


def grid_table(results: dict[Cell, dict[str, Any]]) -> pd.DataFrame:
    """Every number of every cell as one tidy table with `aggregator`, `objective` and
    `seed` columns in front."""
    from mmtrain.evaluation.tables import tidy

    rows = [
        {"aggregator": cell.label, "objective": cell.objective, "seed": cell.seed, **record}
        for cell, saved in results.items()
        for record in cell_records(saved)
    ]
    return tidy(rows, CELL_KEYS)


def metric_columns(settings: CompareSettings, table: pd.DataFrame) -> list[Column]:
    """The comparison's metric columns: the simulated experiment's, or for trained runs
    those of `TRAINED_COLUMNS` that the table holds (one per target where the label asks)."""
    from mmtrain.evaluation.tables import SUMMARY_STDERR, summary_key

    if settings.simulated:
        return SIMULATED_COLUMNS[settings.experiment]
    columns = []
    for metric, field_name, label in TRAINED_COLUMNS:
        rows = table[(table.metric == metric) & table[field_name].notna()]
        for target in dict.fromkeys(rows.target):
            if field_name == "stderr":
                key = SUMMARY_STDERR.get(metric, f"{metric}_se")
                columns.append(Column(key, label, metric, target, "stderr", False))
            else:
                key = summary_key(metric, target)
                columns.append(Column(key, label.format(target), metric, target))
    return columns


def summary_frame(
    settings: CompareSettings, table: pd.DataFrame, columns: list[Column]
) -> pd.DataFrame:
    """One row per aggregator × objective (grid order): `seeds` (cells) and for each column
    `<key>_mean`, `<key>_std` (sample standard deviation over seeds, ddof = 1) and `<key>_n`
    (finite values), from `seed_statistics` of the tidy `table`."""
    import pandas as pd

    from mmtrain.evaluation.tables import seed_statistics

    stats = seed_statistics(table, ["aggregator", "objective"])
    stats = stats.set_index(["aggregator", "objective", "target", "metric"])
    seeds = table.groupby(["aggregator", "objective"]).seed.nunique()
    rows = []
    for aggregator in settings.rows:
        for objective in settings.objectives:
            entry: dict[str, Any] = {
                "aggregator": aggregator,
                "objective": objective,
                "seeds": int(seeds.get((aggregator, objective), 0)),
            }
            for column in columns:
                at = (aggregator, objective, column.target, column.metric)
                found = stats.loc[[at]].iloc[0] if at in stats.index else None
                for stat in ("mean", "std"):
                    value = math.nan if found is None else found[f"{column.field}_{stat}"]
                    entry[f"{column.key}_{stat}"] = float(value)
                entry[f"{column.key}_n"] = 0 if found is None else int(found[f"{column.field}_n"])
            rows.append(entry)
    return pd.DataFrame(rows)


def _digits(column: Column) -> tuple[float, str, int]:
    """(scale, suffix, decimals) of a column's numbers: accuracies as percentages, MCC and
    relative gaps to three decimals, standard errors to four, the rest to two."""
    from mmtrain.report import is_accuracy

    if is_accuracy(column.metric) and column.field == "value":
        return 100.0, "%", 1
    if column.field == "stderr":
        return 1.0, "", 4
    if column.metric.startswith(("mcc", "rel_")):
        return 1.0, "", 3
    return 1.0, "", 2


def format_cell(column: Column, entry: dict[str, Any]) -> str:
    """`mean ± std` of one column in one summary row, as the tables show it."""
    from mmtrain.evaluation.tables import format_mean_std

    scale, suffix, digits = _digits(column)
    n = int(entry[f"{column.key}_n"])
    text = format_mean_std(
        entry[f"{column.key}_mean"], entry[f"{column.key}_std"], n, digits, scale
    )
    return text if text == "–" else text + suffix


def formatted_rows(summary: pd.DataFrame, columns: list[Column]) -> list[dict[str, Any]]:
    """The summary rows with every column as text (`aggregator`, `objective`, `seeds`,
    then one entry per column key)."""
    out = []
    for entry in summary.to_dict("records"):
        text = {c.key: format_cell(c, entry) for c in columns}
        out.append({k: entry[k] for k in ("aggregator", "objective", "seeds")} | text)
    return out


def best_rows(summary: pd.DataFrame, columns: list[Column]) -> dict[str, int]:
    """For each ranked column, the row with the best mean (for bold in the markdown)."""
    best = {}
    for column in columns:
        if not column.ranked:
            continue
        means = summary[f"{column.key}_mean"][summary[f"{column.key}_n"] > 0]
        if len(means) > 1 and means.nunique() > 1:
            best[column.key] = int(means.idxmax() if column.higher else means.idxmin())
    return best


def mode_notes(results: dict[Cell, dict[str, Any]]) -> list[str]:
    """The lines aggregators print about the options their cells ran with
    (`describe_options`, e.g. PoE's mode), distinct and sorted."""
    lines = set()
    for cell, saved in results.items():
        options = saved.get("aggregator_options")
        if options is None:
            options = saved.get("result", {}).get("settings", {}).get("aggregator_options", {})
        line = AGGREGATORS.get(cell.aggregator).describe_options(dict(options or {}))
        if line:
            lines.add(line)
    return sorted(lines)


def write_markdown(
    settings: CompareSettings,
    summary: pd.DataFrame,
    columns: list[Column],
    plot: Path | None,
    notes: list[str] | None = None,
) -> Path:
    """compare.md: the table with its settings, the initialisation, the aggregators' notes
    on their options (`mode_notes`, e.g. PoE's mode) and a plot link."""
    from mmtrain.report import markdown_table

    notes = notes or []
    best = best_rows(summary, columns)
    body = []
    for i, entry in enumerate(formatted_rows(summary, columns)):
        cells: list[object] = [entry["aggregator"], entry["objective"], entry["seeds"]]
        for column in columns:
            text = entry[column.key]
            cells.append(f"**{text}**" if best.get(column.key) == i else text)
        body.append(cells)
    headers = ["aggregator", "objective", "seeds", *[c.label for c in columns]]
    steps = settings.steps if settings.steps is not None else "default"
    chosen = [
        f"{name} {value}"
        for name, value in (("modalities", settings.modalities), ("learning rate", settings.lr))
        if value is not None
    ]
    lower = [c.label for c in columns if not c.higher and c.ranked]
    paragraphs = [
        f"Networks initialised with `init: {settings.init}`."
        + "".join(f" {line}." for line in notes)
    ]
    if any(c.metric.endswith("_objective") for c in columns):
        paragraphs.append(
            "*masked objective* / *mixture objective*: the training objective of the row's "
            "objective (random S, L = 1, reconstruction weights 1) on the training data; only "
            "the mixture objective is a lower bound of log p(x). *ELBO*: the ELBO of q(z | x), "
            "a lower bound for every row. *rel. objective gap* = (exact − objective) / |exact|, "
            "*rel. ELBO gap* likewise; *IS MC s.e.*: the Monte-Carlo standard error of the "
            "importance-sampled mean (delta method)."
        )
    lines = [
        f"# {settings.title}"
        + (f" (M = {settings.modalities})" if settings.modalities is not None else "")
        + ": aggregator × objective",
        "",
        f"Mean ± standard deviation over seeds {', '.join(map(str, settings.seeds))}; "
        f"{steps} training steps per run"
        + "".join(f", {text}" for text in chosen)
        + ". Bold: the best mean of each column ("
        + (
            f"lower is better for {', '.join(lower)}; higher for the others"
            if lower
            else "higher is better"
        )
        + "). Log-likelihoods in nats per example.",
        "",
        *[line for paragraph in paragraphs for line in (paragraph, "")],
        markdown_table(headers, body, ["l", "l"] + ["r"] * (len(headers) - 2)),
        "",
    ]
    if plot is not None:
        lines += [f"![comparison]({plot.name})", ""]
    lines += [
        "Per-run numbers: `cells/*.json`, all of them in one table: `table.csv`"
        + ("; per-run evaluations: `runs/*/eval/report.md`." if not settings.simulated else "."),
        "",
    ]
    path = settings.out / "compare.md"
    path.write_text("\n".join(lines))
    return path


def write_csv(settings: CompareSettings, summary: pd.DataFrame, columns: list[Column]) -> Path:
    """compare.csv: the summary, machine-readable (`experiment`, `aggregator`, `objective`,
    `seeds`, then `<key>_mean`, `<key>_std`, `<key>_n` per column)."""
    keys = [f"{c.key}_{stat}" for c in columns for stat in ("mean", "std", "n")]
    frame = summary[["aggregator", "objective", "seeds", *keys]]
    frame.insert(0, "experiment", settings.name)
    path = settings.out / "compare.csv"
    frame.to_csv(path, index=False)
    return path


def write_json(
    settings: CompareSettings, table: pd.DataFrame, summary: pd.DataFrame, notes: list[str]
) -> Path:
    """compare.json: the grid's settings, the tidy table and the summary rows."""
    from mmtrain.evaluation.tables import records

    summary_rows = summary.astype(object).where(summary.notna(), None).to_dict("records")
    content = {
        "experiment": settings.name,
        "settings": {k: v for k, v in settings.signature().items() if k != "eval"},
        "notes": notes,
        "table": records(table),
        "summary": summary_rows,
    }
    path = settings.out / "compare.json"
    path.write_text(json.dumps(_finite(content), indent=1, default=float))
    return path


def plot_comparison(
    settings: CompareSettings,
    table: pd.DataFrame,
    summary: pd.DataFrame,
    columns: list[Column],
    max_panels: int = 8,
) -> Path | None:
    """One panel per metric: a point per aggregator and objective (mean, ± std over seeds),
    the seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = _plotted_columns(summary, columns, max_panels)
    if not shown:
        return None
    per_row = min(4, len(shown))
    grid_rows = math.ceil(len(shown) / per_row)
    fig, axes = plt.subplots(
        grid_rows,
        per_row,
        figsize=(max(3.0, 0.5 * len(settings.rows) + 1.4) * per_row, 3.4 * grid_rows + 0.5),
        dpi=110,
        squeeze=False,
    )
    for ax in axes.flat[len(shown) :]:
        ax.axis("off")
    summary = summary.set_index(["aggregator", "objective"])
    for ax, column in zip(axes.flat, shown):
        _draw_panel(ax, settings, table, summary, column)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=len(settings.objectives),
        fontsize=9,
        title="objective",
        title_fontsize=9,
        frameon=False,
    )
    steps = settings.steps if settings.steps is not None else "default"
    fig.suptitle(
        f"{settings.title}: mean ± std over {len(settings.seeds)} seed(s), {steps} steps",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0.1 / grid_rows, 1, 1))
    path = settings.out / "compare.png"
    fig.savefig(path, facecolor="white")
    plt.close(fig)
    return path


def _plotted_columns(summary: pd.DataFrame, columns: list[Column], max_panels: int) -> list[Column]:
    """The columns with a value, those of PLOT_FIRST first, at most `max_panels`."""
    available = [c for c in columns if summary[f"{c.key}_n"].any()]
    first = [c for key in PLOT_FIRST for c in available if c.key == key]
    return (first + [c for c in available if c not in first])[:max_panels]


def error_bar(mean: float, std: float, seeds: int, share: bool) -> tuple[float, float]:
    """How far a panel's bar reaches below and above `mean`: one std (none for a single
    seed), cut at 0 and 100 when the value is a share in percent, which cannot leave them."""
    below = above = std if seeds > 1 else 0.0
    if share:
        below, above = min(below, max(mean, 0.0)), min(above, max(100.0 - mean, 0.0))
    return below, above


def _draw_panel(
    ax: Axes, settings: CompareSettings, table: pd.DataFrame, summary: pd.DataFrame, column: Column
) -> None:
    """One metric's panel; `summary` is indexed by (aggregator, objective)."""
    import matplotlib.pyplot as plt
    import numpy as np

    aggregators, objectives = settings.rows, settings.objectives
    width = 0.5 / len(objectives)
    colours = plt.get_cmap("tab10")
    scale = _digits(column)[0]
    rows = table[(table.metric == column.metric) & (table.target == column.target)]
    for j, objective in enumerate(objectives):
        xs = np.arange(len(aggregators)) + (j - (len(objectives) - 1) / 2) * width
        for x, aggregator in zip(xs, aggregators):
            entry = summary.loc[(aggregator, objective)]
            n = int(entry[f"{column.key}_n"])
            if not n:
                continue
            mine = rows[(rows.aggregator == aggregator) & (rows.objective == objective)]
            seeds = scale * mine[column.field].dropna().to_numpy()
            ax.scatter([x] * len(seeds), seeds, s=10, color=colours(j), alpha=0.45, zorder=2)
            mean = scale * float(entry[f"{column.key}_mean"])
            below, above = error_bar(
                mean, scale * float(entry[f"{column.key}_std"]), n, share=scale == 100.0
            )
            ax.errorbar(
                [x],
                [mean],
                yerr=[[below], [above]],
                fmt="o",
                ms=6,
                capsize=4,
                color=colours(j),
                label=objective if x == xs[0] else None,
                zorder=3,
            )
    ax.set_xticks(np.arange(len(aggregators)))
    ax.set_xticklabels(aggregators, rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(aggregators) - 0.4)
    ax.set_title(column.label + ("" if column.higher else " (lower is better)"), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if scale == 100.0:
        ax.set_ylabel("%")


# ----------------------------------------------------------------------------- entry


def render(settings: CompareSettings, results: dict[Cell, dict[str, Any]]) -> dict[str, Any]:
    """Write compare.md, compare.csv, table.csv (the tidy table), compare.json and
    compare.png for the saved cells `results`; return the frames and the paths."""
    table = grid_table(results)
    columns = metric_columns(settings, table)
    summary = summary_frame(settings, table, columns)
    notes = mode_notes(results)
    plot = plot_comparison(settings, table, summary, columns)
    markdown = write_markdown(settings, summary, columns, plot, notes)
    csv_path = write_csv(settings, summary, columns)
    tidy_path = settings.out / "table.csv"
    table.to_csv(tidy_path, index=False)
    json_path = write_json(settings, table, summary, notes)
    return {
        "table": table,
        "summary": summary,
        "columns": columns,
        "notes": notes,
        "markdown": str(markdown),
        "csv": str(csv_path),
        "tidy_csv": str(tidy_path),
        "json": str(json_path),
        "plot": None if plot is None else str(plot),
    }


def run_compare(settings: CompareSettings, log: Log = _stderr) -> dict[str, Any]:
    """Run (or reuse) every cell of the grid and write the tables and the plot under
    `settings.out` (`render`)."""
    settings.validate()
    settings.out.mkdir(parents=True, exist_ok=True)
    results: dict[Cell, dict[str, Any]] = {}
    cells = [
        Cell(aggregator, objective, seed)
        for aggregator in settings.aggregators
        for objective in settings.objectives
        for seed in settings.seeds
    ]
    for index, cell in enumerate(cells, 1):
        log(f"[{index}/{len(cells)}] {cell.aggregator} + {cell.objective}, seed {cell.seed}")
        results[cell] = run_cell(settings, cell, log)
    return render(settings, results)
