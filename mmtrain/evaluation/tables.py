"""Evaluation results as one tidy table, and the tables people read derived from it.

A tidy table is a `pandas.DataFrame` with one row per number and the columns

    subset   the conditioning subset S (`mnist+text`, `∅`), or "" for a number that is not
             conditioned on one S (each row's observed modalities, the prior, a mean over S)
    target   the modality j a number is about (log p̂(x_j | x_S), coherence S → j), or ""
             (`coherence_given`: the number k of given modalities instead)
    metric   what the number is (`log_likelihood`, `coherence`, `joint_ll`, `is_ll`, ...)
    value    the number
    n        how many rows it averages (NaN when not known)
    stderr   its Monte-Carlo standard error (NaN when there is none)

`mmtrain eval` keeps two of them: the per-subset numbers (`evaluation_table`) and the
headline numbers derived from them (`headline_table`); `mmtrain compare` stacks the headline
numbers of every run with `aggregator`, `objective` and `seed` columns in front and derives
the mean ± std over seeds with a groupby (`seed_statistics`). Markdown, CSV and JSON are
written from these frames; nothing re-parses a key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mmtrain.evaluation.subsets import Subset

#: the columns of every tidy table, in order
COLUMNS = ("subset", "target", "metric", "value", "n", "stderr")

#: the subset of a number that is not conditioned on one S
WHOLE = ""

#: the empty subset's name (conditioning on nothing), as `mmtrain.evaluation.subsets` names it
EMPTY = "∅"

#: headline numbers copied from the whole-evaluation rows of the table
WHOLE_HEADLINES = (
    "observed_ll",
    "exact_ll",
    "exact_ll_reference_quirk",
    "mle_ll",
    "rel_model_gap",
    "joint_coherence",
    "coherence_given",
    "mcc_strong_out",
    "mcc_weak_out",
)


def tidy(records: Iterable[Mapping[str, Any]], keys: Sequence[str] = ()) -> pd.DataFrame:
    """A tidy table of `records` (dicts with some of `keys` + `COLUMNS`); missing subsets and
    targets are "", missing counts and errors NaN, infinities NaN."""
    columns = [*keys, *COLUMNS]
    frame = pd.DataFrame(list(records), columns=columns)
    for name in ("subset", "target"):
        frame[name] = frame[name].fillna(WHOLE).astype(str)
    for name in ("value", "n", "stderr"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
        frame[name] = frame[name].replace([np.inf, -np.inf], np.nan)
    return frame


def row(
    metric: str,
    value: float | None,
    subset: str = WHOLE,
    target: str = WHOLE,
    n: float | None = None,
    stderr: float | None = None,
) -> dict[str, Any]:
    """One record of a tidy table."""
    return {
        "subset": subset,
        "target": target,
        "metric": metric,
        "value": value,
        "n": n,
        "stderr": stderr,
    }


# ----------------------------------------------------------------------------- mmtrain eval


def evaluation_table(results: Mapping[str, Any], subsets: Sequence[Subset]) -> pd.DataFrame:
    """The per-subset numbers of an evaluation (`evaluate_model`'s results) as a tidy table.

    Metrics: `log_likelihood` (log p̂(x_S)), `exact_ll` (exact log p(x_S), linear Gaussian
    models), `conditional_ll` (log p̂(x_j | x_S)), `coherence` (S → j for j ∉ S) and
    `reconstruction_coherence` (j ∈ S), `latent_probe`, `mcc_*`; and with subset "":
    `observed_ll`, `joint_coherence`, `coherence_given` (target k: the mean coherence when k
    modalities are given), the whole-data exact numbers and MCC of each row's observed
    modalities; `fid` (of image modality j generated from S, `∅`: the prior)."""
    members = {subset.name: set(subset.names) for subset in subsets}
    likelihood = results["log_likelihood"]
    records = [
        row("log_likelihood", e["mean"], s, n=e["rows"], stderr=e["mc_stderr"])
        for s, e in likelihood["joint"].items()
    ]
    records += [
        row("conditional_ll", e["mean"], s, j, n=e["rows"], stderr=e["mc_stderr"])
        for s, targets in likelihood["conditional"].items()
        for j, e in targets.items()
    ]
    if "observed" in likelihood:
        e = likelihood["observed"]
        records.append(row("observed_ll", e["mean"], n=e["rows"], stderr=e["mc_stderr"]))
    records += [row("exact_ll", v, s) for s, v in results.get("exact_subsets", {}).items()]
    records += [
        row(key, results["exact"][key])
        for key in ("exact_ll", "exact_ll_reference_quirk", "mle_ll", "rel_model_gap")
        if key in results.get("exact", {})
    ]
    records += [
        row(
            "reconstruction_coherence" if j in members.get(s, ()) else "coherence",
            e["accuracy"],
            s,
            j,
            n=e["rows"],
        )
        for s, targets in results.get("coherence", {}).items()
        for j, e in targets.items()
    ]
    if "joint_coherence" in results:
        records.append(row("joint_coherence", results["joint_coherence"]))
    records += [
        row("coherence_given", e["coherence"], target=str(e["given"]), n=e["pairs"])
        for e in results.get("coherence_by_size", {}).get("sizes", [])
    ]
    records += [
        row("fid", e["fid"], s, j, n=e["rows"])
        for j, target in results.get("fid", {}).get("modalities", {}).items()
        for s, e in target["from"].items()
    ]
    records += [
        row("latent_probe", e["accuracy"], s, n=e.get("test_rows"))
        for s, e in results.get("latent_probe", {}).items()
    ]
    for s, e in results.get("mcc", {}).items():
        subset = WHOLE if s == "observed" else s
        records += [
            row(f"mcc_{kind}", e[kind], subset, n=e.get("rows"))
            for kind in ("strong_out", "weak_out")
            if kind in e
        ]
    return tidy(records)


def headline_table(
    table: pd.DataFrame, full: str | None, targets: Sequence[str] = ()
) -> pd.DataFrame:
    """The headline numbers of an evaluation, derived from its per-subset `table`:
    `joint_ll` (log p̂ of the subset of every modality, `full`), `observed_ll`,
    `conditional_ll` per target (mean over S ≠ ∅), `coherence` per target (mean over S ∌ j)
    and `cross_coherence` (mean over every S → j, j ∉ S), `joint_coherence`,
    `latent_probe` (mean over S) and `latent_probe_all` (q(z | all)), exact numbers, MCC;
    `fid` per image modality (mean over S ∌ j, S ≠ ∅) and `fid_prior` (from the prior)."""
    parts = [_joint(table, full), *_means_over_subsets(table)]
    probe = _metric(table, "latent_probe")
    if full is not None:
        parts.append(probe[probe.subset == full].assign(metric="latent_probe_all", subset=WHOLE))
    whole = table[(table.subset == WHOLE) & table.metric.isin(WHOLE_HEADLINES)]
    parts.append(whole.assign(n=np.nan))
    headline = pd.concat([p for p in parts if len(p)], ignore_index=True)
    if headline.empty:
        return tidy([])
    order = {name: i for i, name in enumerate(HEADLINE_ORDER)}
    place = {name: i for i, name in enumerate(targets)}
    headline = headline.assign(
        _rank=headline.metric.map(lambda m: order.get(m, len(order))),
        _target=headline.target.map(lambda t: place.get(t, len(place))),
    )
    headline = headline.sort_values(["_rank", "_target"], kind="stable")
    return tidy(headline.drop(columns=["_rank", "_target"]).to_dict("records"))


#: the order of the headline numbers (in the report and the terminal)
HEADLINE_ORDER = (
    "joint_ll",
    "observed_ll",
    "exact_ll",
    "exact_ll_reference_quirk",
    "mle_ll",
    "rel_model_gap",
    "cross_coherence",
    "joint_coherence",
    "coherence_given",
    "latent_probe_all",
    "latent_probe",
    "mcc_strong_out",
    "mcc_weak_out",
    "conditional_ll",
    "coherence",
    "fid",
    "fid_prior",
)


def _metric(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    return table[(table.metric == metric) & table.value.notna()]


def _joint(table: pd.DataFrame, full: str | None) -> pd.DataFrame:
    joint = _metric(table, "log_likelihood")
    joint = joint[(joint.subset == full) & (joint.n > 0)]
    return joint.assign(metric="joint_ll", subset=WHOLE)


def _means_over_subsets(table: pd.DataFrame) -> list[pd.DataFrame]:
    """Per-target means of the conditional log-likelihoods (S ≠ ∅), the cross coherences and
    the conditional FIDs (S ≠ ∅), the FIDs from the prior, the mean cross coherence over
    every S → j, and the mean latent-probe accuracy."""
    conditional = _metric(table, "conditional_ll")
    conditional = conditional[(conditional.subset != EMPTY) & (conditional.n > 0)]
    coherence = _metric(table, "coherence")
    coherence = coherence[coherence.n > 0]
    probe = _metric(table, "latent_probe")
    fid = _metric(table, "fid")
    out = [_mean_per_target(conditional), _mean_per_target(coherence)]
    out.append(_mean_per_target(fid[fid.subset != EMPTY]))
    out.append(fid[fid.subset == EMPTY].assign(metric="fid_prior", subset=WHOLE))
    for metric, rows in (("cross_coherence", coherence), ("latent_probe", probe)):
        if len(rows):
            out.append(tidy([row(metric, rows.value.mean(), n=rows.n.sum(min_count=1))]))
    return out


def _mean_per_target(rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty:
        return rows
    means = rows.groupby(["metric", "target"], sort=False).agg(
        value=("value", "mean"), n=("n", "sum")
    )
    return tidy(means.reset_index().assign(subset=WHOLE).to_dict("records"))


def summary_key(metric: str, target: str) -> str:
    """The flat key of a headline number in `metrics.json`'s `summary` (`coherence/mnist`)."""
    return f"{metric}/{target}" if target else metric


#: the flat keys of the Monte-Carlo standard errors kept in `summary`
SUMMARY_STDERR = {"joint_ll": "joint_ll_mc_se", "observed_ll": "observed_ll_mc_se"}


def summary_dict(headline: pd.DataFrame) -> dict[str, float]:
    """The headline table as `metrics.json`'s flat `summary` mapping (`joint_ll`,
    `joint_ll_mc_se`, `coherence/mnist`, ...), for readers of earlier files."""
    out: dict[str, float] = {}
    for entry in headline.itertuples(index=False):
        out[summary_key(entry.metric, entry.target)] = float(entry.value)
        if entry.metric in SUMMARY_STDERR:
            out[SUMMARY_STDERR[entry.metric]] = float(entry.stderr)
    return out


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows of a tidy table (NaN as None)."""
    clean = frame.astype(object).where(frame.notna(), None)
    return clean.to_dict("records")


def from_records(rows: Iterable[Mapping[str, Any]], keys: Sequence[str] = ()) -> pd.DataFrame:
    """A tidy table read back from `records` (e.g. from JSON)."""
    return tidy(rows, keys)


def read_csv(path: Any) -> pd.DataFrame:
    """A tidy table written with `DataFrame.to_csv(index=False)` read back: empty subsets and
    targets as "", empty numbers as NaN; columns other than `COLUMNS` kept in front."""
    numbers = ("value", "n", "stderr")
    frame = pd.read_csv(
        path,
        dtype={"subset": str, "target": str},
        keep_default_na=False,
        na_values={name: [""] for name in numbers},
    )
    keys = [name for name in frame.columns if name not in COLUMNS]
    return tidy(frame.to_dict("records"), keys)


# ----------------------------------------------------------------------------- over seeds


def seed_statistics(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Mean, sample standard deviation (ddof = 1, NaN for one seed) and count of the finite
    `value`s and `stderr`s of each `keys` × subset × target × metric group; the columns are
    `value_mean`, `value_std`, `value_n`, `stderr_mean`, `stderr_std`, `stderr_n`."""
    group = [*keys, "subset", "target", "metric"]
    stats = table.groupby(group, sort=False, dropna=False)[["value", "stderr"]].agg(
        ["mean", "std", "count"]
    )
    stats.columns = [f"{field}_{stat.replace('count', 'n')}" for field, stat in stats.columns]
    return stats.reset_index()


def format_mean_std(mean: float, std: float, n: int, digits: int, scale: float = 1.0) -> str:
    """`mean ± std` to `digits` decimals (`mean` alone for one value, `–` for none)."""
    if not n or not math.isfinite(mean):
        return "–"
    text = f"{scale * mean:.{digits}f}"
    if n < 2 or not math.isfinite(std):
        return text
    return f"{text} ± {scale * std:.{digits}f}"
