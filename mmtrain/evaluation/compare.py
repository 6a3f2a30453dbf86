"""`run_compare`: train and evaluate a grid aggregator × objective × seed and summarise it in
one paper-shaped table (mean ± std over seeds) as markdown and CSV, with a plot.

The three simulated experiments run through `mmtrain.paper.run_experiment` (data in
memory, the scripts' models and metrics). `digits` (or any YAML config given with
`--config`) runs the training loop and then `mmtrain eval` on each run; the coherence
classifiers are trained once and shared by every cell.

Every finished cell is saved as `cells/<aggregator>__<objective>__seed<k>.json`; a rerun
with the same settings reuses it (`force` retrains), so a long grid can be resumed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mmtrain.config import TrainConfig, config_from_dict, load_config
from mmtrain.errors import ConfigError
from mmtrain.evaluation.runner import EvalOptions, _finite, evaluate_checkpoint
from mmtrain.nets import check_init_scheme
from mmtrain.paper import EXPERIMENTS
from mmtrain.registry import AGGREGATORS, OBJECTIVES

#: experiments run through the training loop and `mmtrain eval`
TRAINED = ("digits",)

#: (metric key, column label, higher is better) per simulated experiment
_OBJECTIVES = [
    ("masked_objective", "masked objective", True),
    ("mixture_objective", "mixture objective", True),
    ("elbo", "ELBO", True),
]
SIMULATED_METRICS: dict[str, list[tuple[str, str, bool]]] = {
    "linear-gaussian": [
        ("exact_ll", "exact LL", True),
        ("is_ll", "IS LL", True),
        ("is_ll_se", "IS MC s.e.", False),
        *_OBJECTIVES,
        ("mle_ll", "PPCA MLE LL", True),
        ("rel_model_gap", "rel. model gap", False),
        ("rel_objective_gap", "rel. objective gap", False),
        ("rel_elbo_gap", "rel. ELBO gap", False),
        ("exact_ll_reference_quirk", "exact LL with σ̃² (ref. quirk)", True),
    ],
    "ivae-bimodal": [
        ("is_ll", "IS LL", True),
        ("is_ll_se", "IS MC s.e.", False),
        *_OBJECTIVES,
        ("mcc_strong_out", "MCC strong-out", True),
        ("mcc_weak_out", "MCC weak-out", True),
    ],
    "ivae-multimodal": [
        ("is_ll", "IS LL (train)", True),
        ("is_ll_test", "IS LL (test)", True),
        ("is_ll_test_se", "IS MC s.e. (test)", False),
        *_OBJECTIVES,
        ("mcc_strong_out", "MCC strong-out", True),
        ("mcc_pairs_strong_out", "MCC pairs strong-out", True),
    ],
}

#: metrics plotted first when there are more than fit (the headline numbers)
PLOT_FIRST = (
    "joint_ll",
    "observed_ll",
    "exact_ll",
    "is_ll",
    "is_ll_test",
    "cross_coherence",
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
            "eval": {k: v for k, v in self.eval_options.to_dict().items() if k != "pictures"},
        }


@dataclass(frozen=True)
class Cell:
    aggregator: str
    objective: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.aggregator}__{self.objective}__seed{self.seed}"


# ----------------------------------------------------------------------------- one cell


def simulated_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of a `run_experiment` result as one flat mapping."""
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
    objective and seed, the aggregator's component limit respected (PoE: K = 1)."""
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


def digits_config(
    aggregator: str,
    objective: str,
    seed: int,
    steps: int | None,
    output_dir: Path,
    init: str = "flax",
) -> TrainConfig:
    """The digits model of `mmtrain compare` (and `scripts/main.sh`): latent 16, Bernoulli
    pixels, a fixed N(0, I) prior (a 5-component learned prior for mixture-head
    aggregators), 3000 steps of batch 128 by default (about 8 minutes on 2 CPU cores)."""
    mixture = bool(getattr(AGGREGATORS.get(aggregator), "mixture_head", False))
    data = {
        "source": "digits",
        "batch_size": 128,
        "modalities": {
            "mnist": {
                "kind": "image",
                "options": {"height": 28, "width": 28, "likelihood": "bernoulli"},
            },
            "optdigits": {
                "kind": "image",
                "options": {"height": 8, "width": 8, "likelihood": "bernoulli"},
            },
            "text": {"kind": "text", "options": {"length": 8}},
        },
        "label_columns": ["label"],
    }
    return config_from_dict(
        {
            "data": data,
            "model": {
                "aggregator": aggregator,
                "objective": objective,
                "latent_dim": 16,
                "feature_dim": 64,
                "aggregator_options": _aggregator_options(aggregator, 64),
                "prior": {"kind": "mixture", "components": 5} if mixture else {},
                "init": init,
            },
            "optim": {"lr": 1e-3},
            "train": {
                "steps": steps or 3000,
                "log_every": 25,
                "eval_every": max(1, (steps or 3000) // 6),
                "eval_batches": 2,
                "eval_is_samples": 16,
            },
            "seed": seed,
            "output_dir": str(output_dir),
        }
    )


def _aggregator_options(aggregator: str, width: int) -> dict[str, Any]:
    if aggregator.startswith(("sum_pooling", "self_attention")):
        options: dict[str, Any] = {"pooling_size": width, "hidden_size": width}
        if aggregator.startswith("self_attention"):
            options |= {"attention_size": width, "num_heads": 4}
        return options
    return {}


def trained_config(settings: CompareSettings, cell: Cell, run_dir: Path) -> TrainConfig:
    """The config of a trained cell: `--config` with `--set` overrides, or `digits_config`;
    then the cell's aggregator, objective, seed, steps and output directory."""
    if settings.config is None:
        return digits_config(
            cell.aggregator, cell.objective, cell.seed, settings.steps, run_dir, settings.init
        )
    base = load_config(settings.config, settings.overrides)
    overrides = [
        *settings.overrides,
        f"model.aggregator={cell.aggregator}",
        f"model.objective={cell.objective}",
        f"seed={cell.seed}",
        f"output_dir={run_dir}",
        f"model.init={settings.init}",
    ]
    if cell.aggregator != base.model.aggregator:
        # The config's options belong to its own aggregator; size the cell's from it.
        options = _aggregator_options(cell.aggregator, base.model.feature_dim)
        overrides.append(f"model.aggregator_options={json.dumps(options)}")
    if settings.steps is not None:
        overrides += [f"train.steps={settings.steps}", "train.epochs=null"]
    if cell.aggregator == "poe":
        overrides += ["model.prior.kind=fixed", "model.prior.components=1"]
    return load_config(settings.config, overrides)


def run_trained_cell(settings: CompareSettings, cell: Cell, log: Log) -> dict[str, Any]:
    from mmtrain.train.loop import train

    run_dir = settings.out / "runs" / cell.key
    config = trained_config(settings, cell, run_dir)
    # A cell that runs again (--force, other settings, an interrupted run) starts afresh;
    # the earlier attempt is moved aside, not mixed in.
    training = train(config, progress=settings.progress, overwrite=True)
    options = replace(
        settings.eval_options,
        classifier_dir=settings.eval_options.classifier_dir or settings.out / "classifiers",
    )
    results = evaluate_checkpoint(run_dir, run_dir / "eval", None, options, log)
    metrics = dict(results["summary"])
    metrics["train_seconds"] = float(training["seconds"])
    for key in ("masked_objective", "mixture_objective", "elbo"):
        if f"eval/{key}" in training:
            metrics[key] = float(training[f"eval/{key}"])
    return {"metrics": metrics, "eval": str(run_dir / "eval"), "training": _finite(training)}


def cell_poe_mode(saved: dict[str, Any]) -> bool:
    """The `poe_reference_bug` flag a PoE cell ran with (off unless its settings or config
    turned it on)."""
    settings = saved.get("result", {}).get("settings", {})
    if "poe_reference_bug" in settings:
        return bool(settings["poe_reference_bug"])
    config_path = saved.get("eval")
    if config_path:
        report = Path(config_path) / "metrics.json"
        if report.is_file():
            model = json.loads(report.read_text()).get("model", {})
            return bool(model.get("poe_reference_bug"))
    return False


def run_cell(settings: CompareSettings, cell: Cell, log: Log) -> dict[str, Any]:
    """Run one cell, or reuse its saved result when the settings match."""
    path = settings.out / "cells" / f"{cell.key}.json"
    signature = settings.signature()
    if path.is_file() and not settings.force:
        saved = json.loads(path.read_text())
        if saved.get("signature") == signature:
            log(f"{cell.key}: reusing {path}")
            return saved
    log(f"{cell.key}: running")
    started = time.perf_counter()
    if settings.simulated:
        outcome = run_simulated_cell(settings, cell)
    else:
        outcome = run_trained_cell(settings, cell, log)
    saved = {
        "cell": asdict(cell),
        "signature": signature,
        "seconds": time.perf_counter() - started,
        **outcome,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(saved), indent=1))
    return saved


# ----------------------------------------------------------------------------- the table


#: (key, label) of the trained grid's columns, in order; `*` expands per modality
TRAINED_METRICS = (
    ("joint_ll", "joint LL"),
    ("joint_ll_mc_se", "joint LL MC s.e."),
    ("observed_ll", "observed LL"),
    ("masked_objective", "held-out masked objective"),
    ("mixture_objective", "held-out mixture objective"),
    ("elbo", "held-out ELBO"),
    ("conditional_ll/*", "cond. LL {}"),
    ("cross_coherence", "cross coherence"),
    ("coherence/*", "coherence → {}"),
    ("joint_coherence", "joint coherence"),
    ("latent_probe_all", "latent probe (all)"),
    ("latent_probe", "latent probe (mean S)"),
    ("exact_ll", "exact LL"),
    ("mcc_strong_out", "MCC strong-out"),
)


def metric_columns(
    settings: CompareSettings, cells: list[dict[str, Any]]
) -> list[tuple[str, str, bool]]:
    """(key, label, higher is better) of the table's metric columns."""
    if settings.simulated:
        return SIMULATED_METRICS[settings.experiment]
    present: list[str] = []
    for cell in cells:
        present += [k for k, v in cell["metrics"].items() if v is not None and k not in present]
    columns = []
    for key, label in TRAINED_METRICS:
        if key.endswith("/*"):
            prefix = key[:-1]
            for found in present:
                if found.startswith(prefix):
                    columns.append((found, label.format(found[len(prefix) :]), True))
        elif key in present:
            columns.append((key, label, not key.endswith("_se")))
    return columns


@dataclass
class Summary:
    """Mean, standard deviation (sample, over seeds) and count of one metric in one row."""

    mean: float
    std: float
    n: int
    values: list[float]

    @classmethod
    def of(cls, values: list[float]) -> Summary:
        finite = [v for v in values if v is not None and math.isfinite(v)]
        if not finite:
            return cls(math.nan, math.nan, 0, [])
        std = statistics.stdev(finite) if len(finite) > 1 else math.nan
        return cls(statistics.fmean(finite), std, len(finite), finite)


def is_percentage(key: str) -> bool:
    from mmtrain.report import is_accuracy

    return is_accuracy(key)


def format_summary(key: str, summary: Summary) -> str:
    if summary.n == 0:
        return "–"
    scale, suffix, digits = 1.0, "", 2
    if is_percentage(key):
        scale, suffix, digits = 100.0, "%", 1
    elif key.startswith(("mcc", "rel_")):
        digits = 3
    elif key.endswith("_se"):
        digits = 4
    mean = f"{scale * summary.mean:.{digits}f}"
    if summary.n < 2:
        return mean + suffix
    return f"{mean} ± {scale * summary.std:.{digits}f}{suffix}"


def summarize(
    settings: CompareSettings, results: dict[Cell, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[tuple[str, str, bool]]]:
    """One row per aggregator × objective (grid order) with a `Summary` per metric."""
    columns = metric_columns(settings, list(results.values()))
    rows = []
    for aggregator in settings.aggregators:
        for objective in settings.objectives:
            cells = [
                results[c]
                for c in results
                if c.aggregator == aggregator and c.objective == objective
            ]
            row: dict[str, Any] = {
                "aggregator": aggregator,
                "objective": objective,
                "seeds": len(cells),
            }
            for key, _, _ in columns:
                row[key] = Summary.of([cell["metrics"].get(key) for cell in cells])
            rows.append(row)
    return rows, columns


def best_rows(rows: list[dict[str, Any]], columns: list[tuple[str, str, bool]]) -> dict[str, int]:
    """For each metric, the row with the best mean (for bold in the markdown); standard
    errors are not ranked."""
    best = {}
    for key, _, higher in columns:
        if key.endswith("_se"):
            continue
        candidates = [(i, r[key].mean) for i, r in enumerate(rows) if r[key].n]
        means = {mean for _, mean in candidates}
        if len(candidates) > 1 and len(means) > 1:
            pick = max if higher else min
            best[key] = pick(candidates, key=lambda item: item[1])[0]
    return best


def write_markdown(
    settings: CompareSettings,
    rows: list[dict[str, Any]],
    columns: list[tuple[str, str, bool]],
    plot: Path | None,
    poe_modes: list[bool] | None = None,
) -> Path:
    """compare.md: the table with its settings, the initialisation, the PoE mode of the
    PoE rows (`poe_modes`, the distinct `poe_reference_bug` values used) and a plot link."""
    from mmtrain.report import markdown_table, poe_mode

    poe_modes = poe_modes or []

    best = best_rows(rows, columns)
    body = []
    for i, row in enumerate(rows):
        cells: list[object] = [row["aggregator"], row["objective"], row["seeds"]]
        for key, _, _ in columns:
            text = format_summary(key, row[key])
            cells.append(f"**{text}**" if best.get(key) == i else text)
        body.append(cells)
    headers = ["aggregator", "objective", "seeds", *[label for _, label, _ in columns]]
    steps = settings.steps if settings.steps is not None else "default"
    chosen = [
        f"{name} {value}"
        for name, value in (("modalities", settings.modalities), ("learning rate", settings.lr))
        if value is not None
    ]
    lower = [label for key, label, higher in columns if not higher and not key.endswith("_se")]
    notes = [
        f"Networks initialised with `init: {settings.init}`."
        + (" " + poe_mode(poe_modes[0]) + "." if len(poe_modes) == 1 else "")
    ]
    if len(poe_modes) > 1:
        notes.append("PoE rows mix both PoE modes (poe_reference_bug on and off).")
    if any(key.endswith("_objective") for key, _, _ in columns):
        notes.append(
            "*masked objective* / *mixture objective*: the training objective of the row's "
            "objective (random S, L = 1, reconstruction weights 1) on the training data; only "
            "the mixture objective is a lower bound of log p(x). *ELBO*: the ELBO of q(z | x), "
            "a lower bound for every row. *rel. objective gap* = (exact − objective) / |exact|, "
            "*rel. ELBO gap* likewise; *IS MC s.e.*: the Monte-Carlo standard error of the "
            "importance-sampled mean (delta method)."
        )
    lines = [
        f"# {settings.experiment}"
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
        *[line for note in notes for line in (note, "")],
        markdown_table(headers, body, ["l", "l"] + ["r"] * (len(headers) - 2)),
        "",
    ]
    if plot is not None:
        lines += [f"![comparison]({plot.name})", ""]
    lines += [
        "Per-run numbers: `cells/*.json`"
        + ("; per-run evaluations: `runs/*/eval/report.md`." if not settings.simulated else "."),
        "",
    ]
    path = settings.out / "compare.md"
    path.write_text("\n".join(lines))
    return path


def write_csv(
    settings: CompareSettings, rows: list[dict[str, Any]], columns: list[tuple[str, str, bool]]
) -> Path:
    """The same table, machine-readable: `<metric>_mean`, `<metric>_std`, `<metric>_n`."""
    path = settings.out / "compare.csv"
    header = ["experiment", "aggregator", "objective", "seeds"]
    for key, _, _ in columns:
        header += [f"{key}_mean", f"{key}_std", f"{key}_n"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            values: list[object] = [
                settings.experiment,
                row["aggregator"],
                row["objective"],
                row["seeds"],
            ]
            for key, _, _ in columns:
                summary: Summary = row[key]
                values += [_csv_number(summary.mean), _csv_number(summary.std), summary.n]
            writer.writerow(values)
    return path


def _csv_number(value: float) -> str:
    return "" if not math.isfinite(value) else repr(float(value))


def plot_comparison(
    settings: CompareSettings,
    rows: list[dict[str, Any]],
    columns: list[tuple[str, str, bool]],
    max_panels: int = 8,
) -> Path | None:
    """One panel per metric: a bar per aggregator and objective (mean, ± std over seeds),
    the seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    available = [c for c in columns if any(r[c[0]].n for r in rows)]
    first = [c for key in PLOT_FIRST for c in available if c[0] == key]
    shown = (first + [c for c in available if c not in first])[:max_panels]
    if not shown:
        return None
    per_row = min(4, len(shown))
    grid_rows = math.ceil(len(shown) / per_row)
    aggregators, objectives = settings.aggregators, settings.objectives
    width = 0.5 / len(objectives)
    fig, axes = plt.subplots(
        grid_rows,
        per_row,
        figsize=(max(3.0, 0.5 * len(aggregators) + 1.4) * per_row, 3.4 * grid_rows + 0.5),
        dpi=110,
        squeeze=False,
    )
    colours = plt.get_cmap("tab10")
    for ax in axes.flat[len(shown) :]:
        ax.axis("off")
    for ax, (key, label, higher) in zip(axes.flat, shown):
        scale = 100.0 if is_percentage(key) else 1.0
        for j, objective in enumerate(objectives):
            xs = np.arange(len(aggregators)) + (j - (len(objectives) - 1) / 2) * width
            for x, aggregator in zip(xs, aggregators):
                row = next(
                    r for r in rows if r["aggregator"] == aggregator and r["objective"] == objective
                )
                summary: Summary = row[key]
                if not summary.n:
                    continue
                seeds = [scale * v for v in summary.values]
                ax.scatter([x] * len(seeds), seeds, s=10, color=colours(j), alpha=0.45, zorder=2)
                ax.errorbar(
                    [x],
                    [scale * summary.mean],
                    yerr=[scale * summary.std if summary.n > 1 else 0.0],
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
        ax.set_title(label + ("" if higher else " (lower is better)"), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        if is_percentage(key):
            ax.set_ylabel("%")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=len(objectives),
        fontsize=9,
        title="objective",
        title_fontsize=9,
        frameon=False,
    )
    steps = settings.steps if settings.steps is not None else "default"
    fig.suptitle(
        f"{settings.experiment}: mean ± std over {len(settings.seeds)} seed(s), {steps} steps",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0.1 / grid_rows, 1, 1))
    path = settings.out / "compare.png"
    fig.savefig(path, facecolor="white")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- entry


def run_compare(settings: CompareSettings, log: Log = _stderr) -> dict[str, Any]:
    """Run (or reuse) every cell of the grid and write compare.md, compare.csv and
    compare.png under `settings.out`; return the rows and the paths."""
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
    rows, columns = summarize(settings, results)
    plot = plot_comparison(settings, rows, columns)
    poe = sorted({cell_poe_mode(saved) for c, saved in results.items() if c.aggregator == "poe"})
    markdown = write_markdown(settings, rows, columns, plot, poe)
    table = write_csv(settings, rows, columns)
    return {
        "rows": rows,
        "columns": columns,
        "poe_modes": poe,
        "markdown": str(markdown),
        "csv": str(table),
        "plot": None if plot is None else str(plot),
    }
