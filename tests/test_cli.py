"""The CLI: JSON output of a tiny experiment, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmtrain.cli import main


def test_experiment_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code = main(
        [
            "experiment",
            "ivae-bimodal",
            "--steps",
            "5",
            "--is-samples",
            "4",
            "--num-examples",
            "500",
            "--quiet",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["mcc"]) == {"weak_in", "weak_out", "strong_in", "strong_out"}
    assert result["steps"] == 5
    assert result["settings"]["num_components"] == 5


@pytest.mark.parametrize(
    "argv,needle",
    [
        (
            ["experiment", "linear-gaussian", "--aggregator", "sum_pool"],
            "did you mean 'sum_pooling'",
        ),
        (["experiment", "linear-gaussian", "--objective", "elbo"], "Known: masked, mixture"),
        (["experiment", "nope"], "invalid choice"),
        (["experiment", "ivae-bimodal", "--aggregator", "poe"], "single-component prior"),
        (["experiment", "linear-gaussian", "--batch-size", "0"], "batch-size must be at least 1"),
        (["experiment", "linear-gaussian", "--lr", "-1"], "learning rate must be positive"),
    ],
)
def test_errors_are_short_with_status_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) <= 2
    assert "Traceback" not in err


def test_debug_shows_traceback() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmtrain",
            "--debug",
            "experiment",
            "linear-gaussian",
            "--aggregator",
            "nope",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
