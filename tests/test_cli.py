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
    assert result["settings"]["components"] == 5


def test_linear_gaussian_run_prints_table_se_poe_mode_and_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lg.json"
    argv = ["experiment", "linear-gaussian", "--modalities", "2", "--aggregator", "poe"]
    argv += ["--steps", "3", "--num-examples", "600", "--is-samples", "8", "--init", "torch"]
    assert main([*argv, "--quiet", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["settings"]["init"] == "torch"
    assert "poe_reference_bug off" in printed
    assert f"{result['is_ll']:.4f} ± {result['is_ll_se']:.4f}" in printed
    verdict = [line for line in printed.splitlines() if line.startswith("exact ")]
    assert verdict == [
        f"exact {result['exact_ll']:.2f}, masked objective {result['masked_objective']:.2f}, "
        f"ELBO {result['elbo']:.2f}: the objective is "
        f"{abs(result['masked_objective'] - result['exact_ll']):.2f} nats "
        f"{'above' if result['masked_objective'] > result['exact_ll'] else 'below'} the exact "
        f"log-likelihood (not a bound), the ELBO {result['exact_ll'] - result['elbo']:.2f} "
        f"below (a bound); the model is {result['mle_ll'] - result['exact_ll']:.2f} nats "
        "below the PPCA maximum likelihood"
    ]


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
        (
            ["experiment", "linear-gaussian", "--batch-size", "0"],
            "data.batch_size must be a positive integer",
        ),
        (["experiment", "linear-gaussian", "--lr", "-1"], "optim.lr must be positive"),
        (["experiment", "linear-gaussian", "--init", "jax"], "invalid choice"),
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
