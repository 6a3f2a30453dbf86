"""Coherence figures resting on a classifier near chance are flagged (issue 15): in
metrics.json, report.md and the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mmtrain.cli import main
from mmtrain.config import load_config
from mmtrain.train.loop import train

TINY = """
data: {source: ivae-bimodal, batch_size: 250}
model: {aggregator: sum_pooling, latent_dim: 2, feature_dim: 16,
        aggregator_options: {pooling_size: 16, hidden_size: 16}}
train: {steps: 4, log_every: 2}
"""

FAST_EVAL = [
    "--is-samples", "2", "--max-examples", "400", "--max-train-examples", "800",
    "--classifier-epochs", "2", "--joint-samples", "100", "--probe-examples", "100",
    "--no-pictures",
]  # fmt: skip


def test_threshold_rule_against_hand_computed_values() -> None:
    from mmtrain.evaluation.trust import check_classifiers

    labels = {"a": torch.tensor([0, 0, 0, 1]), "b": torch.tensor([0, 1, 2, 3, 4] * 2)}
    check = check_classifiers({"a": 0.8, "b": 0.61}, labels, None)["classifiers"]
    # a: chance 3/4 → threshold 7/8; b: chance 1/5 → threshold 3/5.
    assert check["a"]["chance"] == 0.75 and check["a"]["threshold"] == 0.875
    assert check["a"]["trusted"] is False
    assert check["b"]["chance"] == pytest.approx(0.2) and check["b"]["threshold"] == 0.6
    assert check["b"]["trusted"] is True
    fixed = check_classifiers({"a": 0.8}, labels, 0.5)["classifiers"]["a"]
    assert fixed["threshold"] == 0.5 and fixed["trusted"] is True


@pytest.fixture(scope="module")
def run_and_shuffled_labels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny trained ivae-bimodal run, and a copy of its data whose label column is
    permuted at random, so no classifier can beat chance on it."""
    from mmtrain.data.embedded import make_embedded

    root = tmp_path_factory.mktemp("trust")
    (root / "tiny.yaml").write_text(TINY)
    train(load_config(root / "tiny.yaml", [f"output_dir={root / 'run'}"]), progress=False)
    files = root / "shuffled"
    make_embedded("ivae-bimodal", files, shards=2)
    rng = np.random.default_rng(0)
    for path in sorted(files.glob("*.parquet")):
        table = pq.read_table(path)
        labels = table.column("segment").to_numpy()
        shuffled = pa.array(rng.permutation(labels), type=table.schema.field("segment").type)
        index = table.schema.get_field_index("segment")
        pq.write_table(table.set_column(index, "segment", shuffled), path)
    return root / "run", files


def test_classifiers_at_chance_flag_every_coherence_figure(
    run_and_shuffled_labels: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    run, files = run_and_shuffled_labels
    out = tmp_path / "eval"
    assert main(["eval", str(run), "--data", str(files), "--out", str(out), *FAST_EVAL]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "metrics.json").read_text())

    check = results["classifier_check"]["classifiers"]
    assert set(check) == {"u", "x"}
    for name, verdict in check.items():
        card = results["classifiers"][name]
        assert verdict["test_accuracy"] == card["test_accuracy"]
        assert verdict["test_accuracy"] < verdict["threshold"], (name, verdict)
        assert verdict["trusted"] is False
    # Chance, independently: the most frequent label's share among the scored rows.
    assert 0.2 <= check["x"]["chance"] < 0.3  # five segments, nearly balanced
    assert all(
        entry["trusted"] is False for row in results["coherence"].values() for entry in row.values()
    )
    assert set(results["untrusted"]) == {
        "coherence/u",
        "coherence/x",
        "coherence_given/1",  # two modalities: only one can be given to predict the other
        "cross_coherence",
        "joint_coherence",
    }
    assert len(results["warnings"]) == 3

    report = (out / "report.md").read_text()
    assert report.count("> **Warning:** coherence → ") == 2
    assert "cannot be trusted" in report
    assert "⚠" in report.split("## Summary")[1].split("##")[0]  # flagged in the summary table
    assert printed.count("warning: coherence → ") == 2
    assert "⚠" in printed


def test_trusted_classifiers_are_not_flagged(
    run_and_shuffled_labels: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    """The same evaluation with a threshold every classifier passes flags nothing: the
    flags above come from the accuracies, not from always warning."""
    run, files = run_and_shuffled_labels
    out = tmp_path / "eval"
    argv = ["eval", str(run), "--data", str(files), "--out", str(out), *FAST_EVAL]
    assert main([*argv, "--min-classifier-accuracy", "0"]) == 0
    results = json.loads((out / "metrics.json").read_text())
    assert results["classifier_check"]["rule"] == "fixed: 0.0"
    assert results["untrusted"] == [] and results.get("warnings", []) == []
    assert "Warning" not in (out / "report.md").read_text()
    assert "warning:" not in capsys.readouterr().out
