"""The tidy tables (mmtrain/evaluation/tables.py) against references computed here by hand:
the mean ± std over seeds is numpy's mean and sample standard deviation (ddof = 1, as
`statistics.stdev` in the code before), the headline numbers are plain means of the
per-subset rows they summarise, and CSV and JSON give the table back unchanged."""

from __future__ import annotations

import json
import math
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmtrain.compare import CELL_KEYS, Cell, CompareSettings, render
from mmtrain.evaluation.tables import (
    COLUMNS,
    from_records,
    headline_table,
    read_csv,
    records,
    row,
    seed_statistics,
    summary_dict,
    tidy,
)

#: is_ll, its Monte-Carlo s.e. and MCC per (aggregator, objective) and seed 1, 2, 3
KNOWN = {
    ("sum_pooling", "masked"): ([-10.5, -11.25, -9.0], [0.0123, 0.0131, 0.0119], [0.5, 0.7, 0.6]),
    ("poe", "masked"): ([-8.0, -8.5, -7.75], [0.0101, 0.0099, 0.0104], [0.9, 0.8, 0.95]),
}


def grid() -> pd.DataFrame:
    rows = []
    for (aggregator, objective), (ll, se, mcc) in KNOWN.items():
        for seed, (a, b, c) in enumerate(zip(ll, se, mcc), 1):
            cell = {"aggregator": aggregator, "objective": objective, "seed": seed}
            rows.append(cell | row("is_ll", a, stderr=b))
            rows.append(cell | row("mcc_strong_out", c))
    return tidy(rows, CELL_KEYS)


def test_seed_statistics_are_numpys_mean_and_sample_std() -> None:
    stats = seed_statistics(grid(), ["aggregator", "objective"])
    for (aggregator, objective), (ll, se, _) in KNOWN.items():
        mine = stats[(stats.aggregator == aggregator) & (stats.objective == objective)]
        mine = mine.set_index("metric")
        assert mine.loc["is_ll", "value_mean"] == pytest.approx(np.mean(ll), abs=1e-12)
        assert mine.loc["is_ll", "value_std"] == pytest.approx(np.std(ll, ddof=1), abs=1e-12)
        assert mine.loc["is_ll", "stderr_mean"] == pytest.approx(np.mean(se), abs=1e-12)
        assert mine.loc["is_ll", "stderr_std"] == pytest.approx(np.std(se, ddof=1), abs=1e-12)
        assert mine.loc["mcc_strong_out", "value_n"] == 3
        assert mine.loc["mcc_strong_out", "stderr_n"] == 0


def test_one_seed_has_no_std_and_infinities_are_not_counted() -> None:
    cell = {"aggregator": "moe", "objective": "mixture", "seed": 1}
    table = tidy(
        [cell | row("is_ll", -3.0), {**cell, "seed": 2} | row("is_ll", math.inf)], CELL_KEYS
    )
    stats = seed_statistics(table, ["aggregator", "objective"]).iloc[0]
    assert (stats.value_mean, stats.value_n) == (-3.0, 1) and math.isnan(stats.value_std)


def test_markdown_and_csv_of_a_grid_are_derived_from_the_tidy_table(tmp_path: Path) -> None:
    """The compare outputs of hand-made cells: every `mean ± std` cell of compare.md is
    numpy's mean and sample std of the seeds (s.e. to four decimals, MCC to three), compare.csv
    holds the unrounded numbers, table.csv and compare.json the tidy table itself."""
    settings = CompareSettings(
        "ivae-bimodal", ["sum_pooling", "poe"], ["masked"], [1, 2, 3], steps=5, out=tmp_path
    )
    results = {}
    for (aggregator, objective), (ll, se, mcc) in KNOWN.items():
        for seed in (1, 2, 3):
            metrics = {
                "is_ll": ll[seed - 1],
                "is_ll_se": se[seed - 1],
                "mcc_strong_out": mcc[seed - 1],
            }
            result = {"settings": {"aggregator_options": {}}}
            results[Cell(aggregator, objective, seed)] = {"metrics": metrics, "result": result}
    outcome = render(settings, results)
    markdown = (tmp_path / "compare.md").read_text()
    for (aggregator, objective), (ll, se, mcc) in KNOWN.items():
        line = next(x for x in markdown.splitlines() if x.startswith(f"| {aggregator} |"))
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        assert cells[:3] == [aggregator, objective, "3"]
        assert cells[3] == f"{np.mean(ll):.2f} ± {np.std(ll, ddof=1):.2f}"
        assert cells[4] == f"{np.mean(se):.4f} ± {np.std(se, ddof=1):.4f}"
        assert cells[-2] == f"{np.mean(mcc):.3f} ± {np.std(mcc, ddof=1):.3f}"
        assert cells[-1] == "–"  # no MCC weak-out in these cells
    # the better mean is bold (higher IS LL: poe), standard errors are not ranked
    assert f"**{np.mean(KNOWN[('poe', 'masked')][0]):.2f} ± " in markdown
    assert markdown.count("**") == 2 * 2  # IS LL and MCC strong-out
    assert "PoE mode: precision-weighted mean (poe_reference_bug off)" in markdown
    wide = pd.read_csv(tmp_path / "compare.csv")
    ll = KNOWN[("poe", "masked")][0]
    poe = wide[wide.aggregator == "poe"].iloc[0]
    assert poe.is_ll_mean == pytest.approx(np.mean(ll), abs=1e-12)
    assert poe.is_ll_std == pytest.approx(np.std(ll, ddof=1), abs=1e-12)
    assert (poe.is_ll_n, poe.is_ll_se_n, poe.mcc_weak_out_n) == (3, 3, 0)
    # table.csv and compare.json: the tidy table, round-tripped
    table = outcome["table"]
    pd.testing.assert_frame_equal(read_csv(tmp_path / "table.csv"), table)
    content = json.loads((tmp_path / "compare.json").read_text())
    pd.testing.assert_frame_equal(from_records(content["table"], CELL_KEYS), table)
    assert (tmp_path / "compare.png").is_file()


def test_csv_and_json_round_trips_keep_the_table() -> None:
    table = tidy(
        [
            row("log_likelihood", -1.5, "u", n=300, stderr=0.01),
            row("conditional_ll", -2.25, "∅", "x", n=299, stderr=0.02),
            row("joint_coherence", 0.125),
            row("latent_probe", math.nan, "u+x", n=0),
        ]
    )
    assert list(table.columns) == list(COLUMNS)
    text = table.to_csv(index=False)
    pd.testing.assert_frame_equal(read_csv(StringIO(text)), table)
    again = from_records(json.loads(json.dumps(records(table))))
    pd.testing.assert_frame_equal(again, table)
    assert records(table)[3]["value"] is None  # NaN is JSON's null


def test_headline_numbers_are_means_of_the_per_subset_rows() -> None:
    """joint LL from the full subset; conditional LL per target over S ≠ ∅; coherence per
    target over S ∌ j only (reconstructions left out); the cross coherence over all of
    them; the probe's mean over S and its value at the full subset."""
    table = tidy(
        [
            row("log_likelihood", -1.0, "u", n=10, stderr=0.1),
            row("log_likelihood", -2.0, "x", n=10, stderr=0.2),
            row("log_likelihood", -3.5, "u+x", n=10, stderr=0.3),
            row("conditional_ll", -1.0, "∅", "u", n=10),
            row("conditional_ll", -2.0, "∅", "x", n=10),
            row("conditional_ll", -2.5, "u", "x", n=10),
            row("conditional_ll", -1.5, "x", "u", n=10),
            row("coherence", 0.6, "u", "x", n=10),
            row("coherence", 0.2, "x", "u", n=10),
            row("reconstruction_coherence", 0.99, "u", "u", n=10),
            row("reconstruction_coherence", 0.98, "u+x", "x", n=10),
            row("latent_probe", 0.5, "u", n=10),
            row("latent_probe", 0.7, "x", n=10),
            row("latent_probe", 0.9, "u+x", n=10),
            row("joint_coherence", 0.4),
            row("mcc_strong_out", 0.8),
            row("mcc_strong_out", 0.1, "u", n=10),
        ]
    )
    summary = summary_dict(headline_table(table, "u+x", ["u", "x"]))
    assert summary == {
        "joint_ll": -3.5,
        "joint_ll_mc_se": 0.3,
        "cross_coherence": pytest.approx(np.mean([0.6, 0.2])),
        "joint_coherence": 0.4,
        "latent_probe_all": 0.9,
        "latent_probe": pytest.approx(np.mean([0.5, 0.7, 0.9])),
        "mcc_strong_out": 0.8,
        "conditional_ll/u": -1.5,
        "conditional_ll/x": -2.5,
        "coherence/u": 0.2,
        "coherence/x": 0.6,
    }
    assert list(summary)[-4:] == [
        "conditional_ll/u",
        "conditional_ll/x",
        "coherence/u",
        "coherence/x",
    ]


def test_coherence_by_number_given_reaches_the_headline_and_the_compare_columns() -> None:
    """`evaluation_table` turns the by-size means into `coherence_given` rows (target k),
    the headline keeps them, and compare makes one column per k, in order."""
    from mmtrain.compare import metric_columns
    from mmtrain.evaluation.tables import evaluation_table

    sizes = [
        {"given": 1, "coherence": 0.25, "subsets": 3, "pairs": 6},
        {"given": 2, "coherence": 0.5, "subsets": 3, "pairs": 3},
    ]
    results = {
        "log_likelihood": {"joint": {}, "conditional": {}},
        "coherence_by_size": {"sizes": sizes},
    }
    table = evaluation_table(results, [])
    summary = summary_dict(headline_table(table, None, []))
    assert summary == {"coherence_given/1": 0.25, "coherence_given/2": 0.5}
    cells = [{"aggregator": "poe", "objective": "masked", "seed": 1} | r for r in records(table)]
    settings = CompareSettings(
        experiment="digits", aggregators=["poe"], objectives=["masked"], seeds=[1]
    )
    columns = metric_columns(settings, tidy(cells, CELL_KEYS))
    assert [c.label for c in columns] == ["coherence, 1 given", "coherence, 2 given"]
