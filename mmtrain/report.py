"""Readable terminal tables for results."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.table import Table

LABELS = {
    "exact_ll": "exact log-lik. of the learned model",
    "mle_ll": "PPCA MLE log-likelihood",
    "true_ll": "true-parameter log-likelihood",
    "bound": "variational bound (random S, L=1)",
    "is_ll": "importance-sampled log-likelihood",
    "is_ll_test": "importance-sampled log-lik. (test)",
    "rel_model_gap": "relative model gap (MLE − exact)/|MLE|",
    "rel_bound_gap": "relative bound gap (exact − bound)/|exact|",
    "steps": "optimiser steps",
    "seconds": "training seconds",
    "steps_per_second": "steps per second",
}


def experiment_table(results: Mapping[str, object], console: Console | None = None) -> None:
    console = console or Console()
    settings = results.get("settings", {})
    title = "{experiment}: {aggregator} + {objective}".format(**settings)  # type: ignore[arg-type]
    table = Table(title=title + " (per example)", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in LABELS.items():
        if key in results:
            value = results[key]
            table.add_row(label, f"{value:.4f}" if isinstance(value, float) else str(value))
    mcc = results.get("mcc")
    if isinstance(mcc, Mapping):
        for key, value in mcc.items():
            table.add_row(f"MCC {key.replace('_', '-')}", f"{value:.4f}")
    console.print(table)


def training_summary(result: Mapping[str, object], console: Console | None = None) -> None:
    """A short written summary of a training run."""
    console = console or Console()
    table = Table(title="training summary (per example)", header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("optimiser steps", "steps"),
        ("processes", "world_size"),
        ("training seconds", "seconds"),
        ("train bound (last window)", "train/bound"),
        ("train loss (last window)", "train/loss"),
        ("steps per second", "train/steps_per_second"),
        ("examples per second", "train/examples_per_second"),
        ("held-out bound", "eval/bound"),
        ("held-out importance-sampled log-lik.", "eval/is_ll"),
        ("skipped non-finite steps", "nan_skipped_steps"),
    ]
    for label, key in rows:
        if key in result and result[key] is not None:
            value = result[key]
            table.add_row(label, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    if result.get("checkpoint"):
        console.print(f"checkpoint: {result['checkpoint']}")
