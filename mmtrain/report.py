"""Readable terminal tables for results."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

LABELS = {
    "exact_ll": "exact log-lik. of the learned model",
    "exact_ll_reference_quirk": "same W, b with PPCA noise σ̃² (reference quirk)",
    "mle_ll": "PPCA MLE log-likelihood",
    "true_ll": "true-parameter log-likelihood",
    "masked_objective": "masked objective (random S, L=1; not a bound)",
    "mixture_objective": "mixture objective (random S, L=1; a lower bound)",
    "elbo": "ELBO of q(z|x) (a lower bound)",
    "is_ll": "importance-sampled log-likelihood",
    "is_ll_test": "importance-sampled log-lik. (test)",
    "rel_model_gap": "relative model gap (MLE − exact)/|MLE|",
    "rel_objective_gap": "relative objective gap (exact − objective)/|exact|",
    "rel_elbo_gap": "relative ELBO gap (exact − ELBO)/|exact|",
    "steps": "optimiser steps",
    "seconds": "training seconds",
    "steps_per_second": "steps per second",
}

#: keys shown as "value ± Monte-Carlo standard error"
STANDARD_ERRORS = {"is_ll": "is_ll_se", "is_ll_test": "is_ll_test_se"}


def experiment_table(results: Mapping[str, object], console: Console | None = None) -> None:
    console = console or Console()
    settings = results.get("settings", {})
    title = "{experiment}: {aggregator} + {objective}".format(**settings)  # type: ignore[arg-type]
    caption = settings.get("options_line") if isinstance(settings, Mapping) else None
    table = Table(
        title=title + " (per example)", caption=caption, show_header=True, header_style="bold"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in LABELS.items():
        if key in results:
            value = results[key]
            text = f"{value:.4f}" if isinstance(value, float) else str(value)
            error = results.get(STANDARD_ERRORS.get(key, ""))
            if isinstance(error, float):
                text += f" ± {error:.4f}"
            table.add_row(label, text)
    mcc = results.get("mcc")
    if isinstance(mcc, Mapping):
        for key, value in mcc.items():
            table.add_row(f"MCC {key.replace('_', '-')}", f"{value:.4f}")
    console.print(table)


def linear_gaussian_verdict(results: Mapping[str, object]) -> str | None:
    """One line comparing the training objective and the ELBO with the exact log-likelihood
    of a linear-Gaussian run (None when the results have no exact log-likelihood), e.g.
    `exact −117.80, masked objective −117.78, ELBO −117.90: the objective is 0.02 nats
    above the exact log-likelihood (not a bound), the ELBO 0.10 below (a bound)`."""
    exact = results.get("exact_ll")
    settings = results.get("settings", {})
    name = settings.get("objective") if isinstance(settings, Mapping) else None
    value = results.get(f"{name}_objective")
    if not isinstance(exact, float) or not isinstance(value, float):
        return None
    gap = value - exact
    side = "above" if gap > 0 else "below"
    kind = "not a bound" if name == "masked" else "a bound" if name == "mixture" else name
    line = f"exact {exact:.2f}, {name} objective {value:.2f}"
    elbo = results.get("elbo")
    if isinstance(elbo, float):
        line += f", ELBO {elbo:.2f}"
    line += f": the objective is {abs(gap):.2f} nats {side} the exact log-likelihood ({kind})"
    if isinstance(elbo, float):
        line += f", the ELBO {exact - elbo:.2f} below (a bound)"
    mle = results.get("mle_ll")
    if isinstance(mle, float):
        line += f"; the model is {mle - exact:.2f} nats below the PPCA maximum likelihood"
    return line


#: (label, key in `summary.json`) of the numbers a training summary shows, in order
TRAINING_LABELS = (
    ("optimiser steps", "steps"),
    ("processes", "world_size"),
    ("training seconds", "seconds"),
    ("train masked objective (last window)", "train/masked_objective"),
    ("train mixture objective (last window)", "train/mixture_objective"),
    ("train ELBO (last window)", "train/elbo"),
    ("train loss (last window)", "train/loss"),
    ("steps per second", "train/steps_per_second"),
    ("examples per second", "train/examples_per_second"),
    ("held-out masked objective", "eval/masked_objective"),
    ("held-out mixture objective", "eval/mixture_objective"),
    ("held-out ELBO", "eval/elbo"),
    ("held-out importance-sampled log-lik.", "eval/is_ll"),
    ("  its Monte-Carlo standard error", "eval/is_ll_se"),
    ("skipped non-finite steps", "nan_skipped_steps"),
)


def training_summary(result: Mapping[str, object], console: Console | None = None) -> None:
    """A short written summary of a training run."""
    console = console or Console()
    table = Table(title="training summary (per example)", header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, key in TRAINING_LABELS:
        if key in result and result[key] is not None:
            value = result[key]
            table.add_row(label, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    if result.get("checkpoint"):
        console.print(f"checkpoint: {result['checkpoint']}")
    best = result.get("best_checkpoint")
    if isinstance(best, Mapping):
        console.print(
            f"best checkpoint: {best['path']} (step {best['step']}, "
            f"{best['metric']} = {best['value']:.6g})"
        )
    if result.get("stop_reason"):
        console.print(str(result["stop_reason"]))


# ----------------------------------------------------------------------------- evaluation


def format_number(value: object, digits: int = 2) -> str:
    """A table cell: floats to `digits` decimals (`–` for missing or NaN), others as text."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(
    headers: list[str], rows: list[list[object]], align: list[str] | None = None, digits: int = 2
) -> str:
    """A GitHub-flavoured markdown table; `align` holds `l` or `r` per column (numbers
    right-aligned by default)."""
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    cells = [[format_number(v, digits).replace("|", "\\|") for v in row] for row in rows]
    rule = ["---:" if a == "r" else ":---" for a in align]
    header = [h.replace("|", "\\|") for h in headers]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


#: headline numbers of `mmtrain eval`, in display order, with their labels
EVAL_LABELS = {
    "joint_ll": "joint log-likelihood log p̂(x), all modalities",
    "joint_ll_mc_se": "  its Monte-Carlo standard error",
    "observed_ll": "log-likelihood of the observed modalities",
    "observed_ll_mc_se": "  its Monte-Carlo standard error",
    "exact_ll": "exact log-likelihood of the model",
    "exact_ll_reference_quirk": "same W, b with PPCA noise σ̃² (reference quirk)",
    "mle_ll": "PPCA maximum-likelihood log-likelihood",
    "rel_model_gap": "relative model gap (MLE − exact)/|MLE|",
    "cross_coherence": "cross-generation coherence (mean over S → j, j ∉ S)",
    "joint_coherence": "joint coherence (prior samples)",
    "latent_probe_all": "latent classification, q(z | all)",
    "latent_probe": "latent classification, mean over S",
    "mcc_strong_out": "MCC strong, out-of-sample",
    "mcc_weak_out": "MCC weak, out-of-sample",
}


def eval_summary_rows(headline: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, float]]:
    """(key, label, value) of the headline numbers (the rows of
    `mmtrain.evaluation.tables.headline_table`, in its order): each number, and the
    Monte-Carlo standard error beside the log-likelihoods that have one. `key` is the
    number's flat key in `metrics.json`'s `summary` (`coherence/mnist`)."""
    rows = []
    for entry in headline:
        metric, target = entry["metric"], entry["target"]
        key = f"{metric}/{target}" if target else metric
        if metric == "coherence":
            label = f"coherence → {target} (mean over S without it)"
        elif metric == "conditional_ll":
            label = f"log p̂({target} | x_S), mean over S ≠ ∅"
        elif metric == "coherence_given":
            label = f"coherence with {target} given, mean over S of that size and j ∉ S"
        elif metric == "fid":
            label = f"FID of {target} generated from S, mean over S without it"
        elif metric == "fid_prior":
            label = f"FID of {target} generated from the prior"
        else:
            label = EVAL_LABELS.get(metric, metric)
        rows.append((key, label, entry["value"]))
        stderr = entry.get("stderr")
        if f"{metric}_mc_se" in EVAL_LABELS and stderr is not None and stderr == stderr:
            rows.append((f"{metric}_mc_se", EVAL_LABELS[f"{metric}_mc_se"], stderr))
    return rows


def is_accuracy(key: str) -> bool:
    """Whether a headline number of `mmtrain eval` is a fraction shown as a percentage."""
    return key.startswith(("coherence", "cross_coherence", "joint_coherence", "latent_probe"))


def format_metric(key: str, value: object) -> str:
    """A headline number as shown in tables: accuracies as percentages."""
    if is_accuracy(key) and isinstance(value, float) and value == value:
        return f"{100 * value:.1f}%"
    return format_number(value, 3)


def eval_table(results: Mapping[str, object], console: Console | None = None) -> None:
    """The headline numbers of an evaluation as a terminal table."""
    console = console or Console()
    model = results.get("model", {})
    title = "evaluation: {aggregator} + {objective}".format(**model)  # type: ignore[arg-type]
    caption = model.get("options_line") if isinstance(model, Mapping) else None
    table = Table(title=title + " (per example)", caption=caption, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    headline = results.get("headline", [])
    untrusted = set(results.get("untrusted", ()))  # type: ignore[arg-type]
    for key, label, value in eval_summary_rows(headline):  # type: ignore[arg-type]
        mark = " ⚠ untrusted" if key in untrusted else ""
        table.add_row(label, format_metric(key, value) + mark)
    console.print(table)
    for warning in results.get("warnings", ()):  # type: ignore[union-attr]
        console.print(f"warning: {warning}", style="bold yellow", highlight=False)


#: beyond this many metric columns `compare_table` prints one row per metric
_WIDE_TABLE_METRICS = 8


def compare_table(
    rows: list[dict[str, object]],
    metrics: list[tuple[str, str]],
    console: Console | None = None,
    notes: list[str] | None = None,
) -> None:
    """`mmtrain compare`'s table in the terminal: one row per aggregator × objective, each
    metric as mean ± std over seeds (`mmtrain.compare.formatted_rows`); the caption gives the
    aggregators' notes on their options (e.g. the PoE mode of the PoE rows)."""
    # Off a terminal rich assumes 80 columns; a log file can take the table at full width.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    caption = "; ".join(notes or []) or None
    title = "comparison (mean ± std over seeds)"
    if len(metrics) > _WIDE_TABLE_METRICS:
        # Many metrics (PolyMNIST has 25) squeeze one row per cell into unreadable columns:
        # one row per metric, one column per aggregator × objective instead.
        table = Table(title=title, caption=caption, header_style="bold")
        table.add_column("metric")
        for row in rows:
            table.add_column(
                f"{row['aggregator']}\n{row['objective']}\n({row['seeds']} seeds)", justify="right"
            )
        for key, label in metrics:
            table.add_row(label, *[str(row.get(key, "–")) for row in rows])
        console.print(table)
        return
    table = Table(title=title, caption=caption, header_style="bold")
    table.add_column("aggregator")
    table.add_column("objective")
    table.add_column("seeds", justify="right")
    for _, label in metrics:
        table.add_column(label, justify="right")
    for row in rows:
        table.add_row(
            str(row["aggregator"]),
            str(row["objective"]),
            str(row["seeds"]),
            *[str(row.get(key, "–")) for key, _ in metrics],
        )
    console.print(table)
