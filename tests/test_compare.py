"""`mmtrain compare` (mmtrain/compare.py): the grid end to end on tiny runs, its run
directories under OUT/runs, the digits config, and cells saved by earlier versions
re-rendered from their cache (tests/fixtures/compare-cells, written by the code before the
tidy tables: a 2-step `mmtrain compare` of ivae-bimodal and linear-gaussian)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from mmtrain.cli import main
from mmtrain.compare import CELL_KEYS, Cell, CompareSettings, error_bar, trained_config
from mmtrain.evaluation.tables import from_records, read_csv
from mmtrain.registry import AGGREGATORS
from tests.evaluation.test_end_to_end import TINY

FIXTURES = Path(__file__).parent / "fixtures" / "compare-cells"

#: the commands that wrote the fixtures (with --out added)
FIXTURE_COMMANDS = {
    "bimodal": [
        "compare",
        "--experiment",
        "ivae-bimodal",
        "--aggregators",
        "sum_pooling",
        "poe",
        "--objectives",
        "masked",
        "mixture",
        "--seeds",
        "1",
        "2",
        "--steps",
        "2",
        "--is-samples",
        "2",
        "--quiet",
    ],
    "lg": [
        "compare",
        "--experiment",
        "linear-gaussian",
        "--modalities",
        "2",
        "--lr",
        "0.003",
        "--aggregators",
        "sum_pooling",
        "poe",
        "--objectives",
        "masked",
        "--seeds",
        "1",
        "2",
        "--steps",
        "2",
        "--is-samples",
        "2",
        "--quiet",
    ],
}


def _no_training(*args, **kwargs):
    raise AssertionError("a cached cell was run again")


@pytest.mark.parametrize("name", sorted(FIXTURE_COMMANDS))
def test_cached_cells_of_the_earlier_format_are_reused_and_rendered(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Cells saved before the tidy tables are reused as they are, and the tables written
    from them hold the numbers the earlier code wrote (its compare.md table and compare.csv
    are kept beside the cells)."""
    out = tmp_path / name
    shutil.copytree(FIXTURES / name / "cells", out / "cells")
    monkeypatch.setattr("mmtrain.compare.run_simulated_cell", _no_training)
    monkeypatch.setattr("mmtrain.compare.run_trained_cell", _no_training)
    assert main([*FIXTURE_COMMANDS[name], "--out", str(out)]) == 0
    cells = sorted((out / "cells").glob("*.json"))
    assert capsys.readouterr().err.count("reusing") == len(cells)
    # compare.csv: the same columns and rows, the same numbers (std to rounding)
    old = pd.read_csv(FIXTURES / name / "compare.csv")
    new = pd.read_csv(out / "compare.csv")
    assert list(new.columns) == list(old.columns)
    pd.testing.assert_frame_equal(new, old, check_exact=False, rtol=1e-12)

    # compare.md: the same table, line for line
    def table_lines(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines() if line.startswith("|")]

    assert table_lines(out / "compare.md") == table_lines(FIXTURES / name / "compare.md")
    assert (
        "PoE mode: precision-weighted mean (poe_reference_bug off)"
        in (out / "compare.md").read_text()
    )
    # the tidy table holds every cell's numbers, the standard errors beside their metric
    tidy = read_csv(out / "table.csv")
    assert list(tidy.columns) == [
        "aggregator",
        "objective",
        "seed",
        "subset",
        "target",
        "metric",
        "value",
        "n",
        "stderr",
    ]
    for path in cells:
        saved = json.loads(path.read_text())
        cell = saved["cell"]
        mine = tidy[
            (tidy.aggregator == cell["aggregator"])
            & (tidy.objective == cell["objective"])
            & (tidy.seed == cell["seed"])
        ].set_index("metric")
        metrics = saved["metrics"]
        assert mine.loc["is_ll", "value"] == metrics["is_ll"]
        assert mine.loc["is_ll", "stderr"] == metrics["is_ll_se"]
        assert "is_ll_se" not in mine.index
        for key in ("elbo", "masked_objective", "mixture_objective", "mcc_strong_out"):
            if key in metrics:
                assert mine.loc[key, "value"] == metrics[key]
    # compare.json: the tidy table again, row for row
    content = json.loads((out / "compare.json").read_text())
    back = from_records(content["table"], CELL_KEYS)
    pd.testing.assert_frame_equal(back, tidy, check_dtype=False)


def test_trained_cells_start_from_the_shipped_digits_config(tmp_path: Path) -> None:
    """digits reads configs/digits.yaml; another aggregator takes the options its class
    derives from the config's width, PoE a one-component prior."""
    settings = CompareSettings("digits", ["sum_pooling", "self_attention", "poe"], steps=12)
    for aggregator in settings.aggregators:
        cell = Cell(aggregator, "mixture", 3)
        config = trained_config(settings, cell, tmp_path / cell.key)
        model = config.model
        assert (model.aggregator, model.objective, config.seed) == (aggregator, "mixture", 3)
        assert (config.train.steps, config.train.eval_every) == (12, 2)
        assert config.output_dir == str(tmp_path / cell.key)
        assert config.data.source == "digits" and model.latent_dim == 16
        cls = AGGREGATORS.get(aggregator)
        if aggregator == "sum_pooling":
            assert model.aggregator_options == {"pooling_size": 64, "hidden_size": 64}
        else:
            assert model.aggregator_options == {}
            assert model.aggregator_width == 64
            assert cls.options_for_width(64) or aggregator == "poe"
        if cls.mixture_head:
            assert (model.prior.kind, model.prior.components) == ("mixture", 5)
        else:
            assert model.prior.components == 1


def test_compare_simulated_grid_writes_table_csv_and_plot(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "compare"
    # The command that wrote the bimodal fixtures, trained afresh.
    args = [*FIXTURE_COMMANDS["bimodal"], "--out", str(out)]
    assert main(args) == 0
    markdown = (out / "compare.md").read_text()
    assert "| sum_pooling | masked | 2 |" in markdown and "| poe | masked | 2 |" in markdown
    assert " ± " in markdown and "![comparison](compare.png)" in markdown
    assert "poe_reference_bug off" in markdown and "`init: flax`" in markdown
    assert "| masked objective | mixture objective | ELBO |" in markdown
    with (out / "compare.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # each objective's value in its own column; the ELBO (a true bound) for every row
    assert [(r["masked_objective_n"], r["mixture_objective_n"], r["elbo_n"]) for r in rows] == [
        ("2", "0", "2"),
        ("0", "2", "2"),
    ] * 2
    assert [(r["aggregator"], r["objective"], r["seeds"]) for r in rows] == [
        ("sum_pooling", "masked", "2"),
        ("sum_pooling", "mixture", "2"),
        ("poe", "masked", "2"),
        ("poe", "mixture", "2"),
    ]
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert len(cells) == 8
    for row in rows:
        values = []
        for seed in (1, 2):
            name = f"{row['aggregator']}__{row['objective']}__seed{seed}.json"
            cell = json.loads((out / "cells" / name).read_text())
            values.append(cell["metrics"]["mcc_strong_out"])
        assert float(row["mcc_strong_out_mean"]) == pytest.approx(sum(values) / 2)
        assert int(row["is_ll_n"]) == 2
    with Image.open(out / "compare.png") as image:
        assert image.width > 400
    # every run directory lies under OUT/runs, none in the working directory
    assert sorted(p.name for p in (out / "runs").iterdir()) == [c[: -len(".json")] for c in cells]
    assert not (tmp_path / "runs").exists()
    printed = " ".join(capsys.readouterr().out.split())
    assert "PoE mode: precision-weighted mean (poe_reference_bug off)" in printed
    assert main(args) == 0
    assert capsys.readouterr().err.count("reusing") == 8


def test_compare_trained_grid_evaluates_each_run(tmp_path: Path) -> None:
    """The training-loop path (as for digits) with a YAML config: each run is trained,
    evaluated with shared classifiers, and summarised."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "compare"
    args = [
        "compare",
        "--experiment",
        "ivae-bimodal",
        "--config",
        str(config),
        "--aggregators",
        "sum_pooling",
        "poe",
        "--objectives",
        "mixture",
        "--seeds",
        "3",
        "--steps",
        "3",
        "--is-samples",
        "2",
        "--max-examples",
        "200",
        "--classifier-epochs",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    with (out / "compare.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["aggregator"] for r in rows] == ["sum_pooling", "poe"]
    assert all(r["joint_ll_n"] == "1" and r["cross_coherence_n"] == "1" for r in rows)
    assert (out / "classifiers" / "x.safetensors").is_file()
    for aggregator in ("sum_pooling", "poe"):
        run = out / "runs" / f"{aggregator}__mixture__seed3"
        assert (run / "eval" / "report.md").is_file()
        model = json.loads((run / "config.json").read_text())["model"]
        assert (model["aggregator"], model["objective"]) == (aggregator, "mixture")
    # poe takes none of the config's sum-pooling options
    assert (
        json.loads((out / "runs" / "poe__mixture__seed3" / "config.json").read_text())["model"][
            "aggregator_options"
        ]
        == {}
    )


def test_compare_linear_gaussian_takes_the_number_of_modalities(tmp_path: Path) -> None:
    out = tmp_path / "compare"
    args = ["compare", "--experiment", "linear-gaussian", "--aggregators", "sum_pooling"]
    args += ["--objectives", "masked", "--steps", "2", "--is-samples", "2", "--modalities", "3"]
    args += ["--lr", "0.003", "--out", str(out), "--quiet"]
    assert main(args) == 0
    cell = json.loads((out / "cells" / "sum_pooling__masked__seed1.json").read_text())
    settings = cell["result"]["settings"]
    assert (settings["modalities"], settings["lr"]) == (3, 0.003)
    assert "# linear-gaussian (M = 3)" in (out / "compare.md").read_text()
    # Trained runs take their learning rate from the config, never from --lr.
    assert main(["compare", "--experiment", "digits", "--aggregators", "poe", "--lr", "0.1"]) == 2


def test_error_bars_of_shares_stop_at_0_and_100_percent() -> None:
    assert error_bar(5.0, 8.0, seeds=2, share=True) == (5.0, 8.0)
    assert error_bar(97.0, 8.0, seeds=2, share=True) == (8.0, 3.0)
    assert error_bar(40.0, 8.0, seeds=2, share=True) == (8.0, 8.0)
    assert error_bar(-150.0, 8.0, seeds=2, share=False) == (8.0, 8.0)
    assert error_bar(5.0, float("nan"), seeds=1, share=True) == (0.0, 0.0)
