"""`mmtrain sweep` (mmtrain/sweep.py) without a cluster: the grid and range options, and a
bad grid key refused with the schema's message before any trial starts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mmtrain.compare import Cell
from mmtrain.errors import ConfigError
from mmtrain.sweep import (
    Range,
    SweepOptions,
    check_cells,
    check_search,
    grid_cells,
    overlapping,
    parse_grid,
    run_sweep,
    split_values,
    sweep_settings,
    trial_events,
    trial_rows,
    unfinished_cells,
    write_trial_table,
)
from tests.evaluation.test_end_to_end import TINY


def test_grid_values_split_on_top_level_commas() -> None:
    assert split_values("sum_pooling,poe") == ["sum_pooling", "poe"]
    assert split_values("[1,2],[3]") == ["[1,2]", "[3]"]
    assert parse_grid(["model.aggregator=sum_pooling,poe", "optim.lr=1e-3,3e-4"]) == {
        "model.aggregator": ["sum_pooling", "poe"],
        "optim.lr": ["1e-3", "3e-4"],
    }
    for bad in (["model.aggregator"], ["seed=1,2"], ["a=1", "a=2"]):
        with pytest.raises(ConfigError):
            parse_grid(bad)


def test_ranges_parse_and_format() -> None:
    lr = Range.parse("optim.lr=loguniform:1e-4:1e-2")
    assert (lr.key, lr.distribution, lr.low, lr.high) == ("optim.lr", "loguniform", 1e-4, 1e-2)
    assert lr.override(0.000123456789) == "optim.lr=0.000123457"
    for bad in ("optim.lr=normal:0:1", "optim.lr=loguniform:0:1", "optim.lr=uniform:2:1"):
        with pytest.raises(ConfigError):
            Range.parse(bad)
    with pytest.raises(ConfigError, match="--search random"):
        SweepOptions(ranges=[lr]).validate()


def test_grid_cells_and_a_bad_key_before_any_trial(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    grid = parse_grid(["model.aggregator=sum_pooling,poe", "optim.lr=1e-3,3e-4"])
    settings = sweep_settings(config, grid, [0, 1], out=tmp_path / "out")
    cells = grid_cells(settings)
    assert len(cells) == 2 * 2 * 2
    assert settings.rows[:2] == ["sum_pooling (optim.lr=1e-3)", "sum_pooling (optim.lr=3e-4)"]
    check_cells(settings, cells, SweepOptions())
    bad = sweep_settings(config, parse_grid(["model.latnt_dim=2,3"]), [0], out=tmp_path / "o")
    with pytest.raises(ConfigError, match="did you mean 'model.latent_dim'"):
        check_cells(bad, grid_cells(bad), SweepOptions())


def test_overlap_of_trial_intervals() -> None:
    events = {
        "a": [{"event": "start", "time": 0.0}, {"event": "end", "time": 10.0}],
        "b": [{"event": "start", "time": 4.0}, {"event": "end", "time": 12.0}],
        "c": [{"event": "start", "time": 12.5}, {"event": "end", "time": 13.0}],
    }
    assert overlapping(events) == [("a", "b", 6.0)]


def test_trial_rows_and_unfinished_cells_after_a_killed_driver(tmp_path: Path) -> None:
    """Cell a ended; b was cut off with the driver and ran again (continuing its Ray Train
    run) on `--resume`; c never started before the kill: a and the rerun b are done."""
    cells = [Cell("a", "masked", 0), Cell("b", "masked", 0), Cell("c", "masked", 0)]
    a, b, c = (cell.key for cell in cells)
    end = {"event": "end", "steps": 60, "workers": [{"node_id": "n1"}]}
    events = {
        a: [{"event": "start", "time": 0.0, "trial_id": "t0"}, {**end, "time": 9.0}],
        b: [{"event": "start", "time": 1.0, "trial_id": "t1"}],
    }
    assert unfinished_cells(cells, events) == cells[1:]
    events[b].append(
        {"event": "start", "time": 20.0, "trial_id": "t1", "continues_ray_train_run": True}
    )
    assert unfinished_cells(cells, events) == cells[1:]
    events[b].append({**end, "time": 30.0, "resumed_from_ray_checkpoint": 40})
    assert unfinished_cells(cells, events) == [cells[2]]

    rows = trial_rows(events)
    assert [(r["cell"], r["attempt"], r["end"]) for r in rows] == [
        (a, 1, 9.0),
        (b, 1, None),
        (b, 2, 30.0),
    ]
    assert rows[2]["continues_ray_train_run"] and rows[2]["resumed_from_step"] == 40
    assert rows[0]["worker_node"] == "n1"

    for key, records in events.items():
        _record_all(tmp_path, key, records)
    table = write_trial_table(tmp_path).read_text().splitlines()
    assert table[0].startswith("cell,attempt,trial_id,worker_node,start_s,end_s,seconds")
    assert table[2].split(",")[:7] == [b, "1", "t1", "", "1.0", "", ""]
    assert table[3].split(",")[4:7] == ["20.0", "30.0", "10.0"]


def _record_all(out: Path, key: str, records: list[dict[str, object]]) -> None:
    path = out / "trials" / f"{key}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.slow
def test_random_search_with_asha_on_local_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--search random --trials 2 --range optim.lr=... --asha eval/is_ll` on a local Ray
    instance: both trials end (by themselves at the last step, or stopped by ASHA at its
    rung), each is evaluated, and the table has one row per sampled learning rate."""
    from mmtrain.evaluation.runner import EvalOptions

    for name, value in (
        ("RAY_AUTH_MODE", "disabled"),
        ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
        ("RAY_USAGE_STATS_ENABLED", "0"),
        ("HF_HUB_OFFLINE", "1"),
        ("HF_DATASETS_OFFLINE", "1"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("eval_split: null", "eval_split: train, checkpoint_every: 4"))
    settings = sweep_settings(
        config,
        {},
        [0],
        out=tmp_path / "out",
        eval_options=EvalOptions(
            is_samples=2,
            max_examples=100,
            max_train_examples=300,
            probe_examples=100,
            classifier_epochs=1,
            joint_samples=100,
        ),
        progress=False,
    )
    options = SweepOptions(
        search="random",
        trials=2,
        ranges=[Range.parse("optim.lr=loguniform:1e-3:1e-2")],
        asha="eval/is_ll",
        cpus_per_trial=0.5,
        max_failures=0,
        quiet=True,
    )
    outcome = run_sweep(settings, options)
    rows = trial_rows(trial_events(settings.out))
    assert len(rows) == 2 and len({r["cell"] for r in rows}) == 2
    for row in rows:
        assert row["end"] is not None, row
        # ASHA's one rung is step 4: a trial it stops there ends at step 4.
        assert row["steps"] == (4 if row["stopped_by_scheduler"] else 8), row
    assert len(outcome["summary"]) == 2
    assert (settings.out / "trials.csv").is_file() and Path(outcome["markdown"]).is_file()


def test_optuna_search_options(monkeypatch: pytest.MonkeyPatch) -> None:
    lr = Range.parse("optim.lr=loguniform:1e-4:1e-2")
    with pytest.raises(ConfigError, match="needs --metric"):
        SweepOptions(search="optuna", ranges=[lr]).validate()
    with pytest.raises(ConfigError, match="--range"):
        SweepOptions(search="optuna", metric="eval/is_ll").validate()
    with pytest.raises(ConfigError, match="--metric is what --search optuna"):
        SweepOptions(search="random", ranges=[lr], metric="eval/is_ll").validate()
    options = SweepOptions(search="optuna", ranges=[lr], trials=4, metric="eval/is_ll").validate()
    one, two = Cell("poe", "masked", 0), Cell("poe", "masked", 1)
    check_search([Cell("sum_pooling", "masked", 0)], SweepOptions())
    # Without Optuna installed: the error says how to install it, before Ray starts.
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ConfigError, match="pip install optuna"):
        check_search([one], options)
    monkeypatch.undo()
    pytest.importorskip("optuna")
    with pytest.raises(ConfigError, match="one grid point"):
        check_search([one, two], options)
    check_search([one], options)
