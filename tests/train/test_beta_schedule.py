"""β warm-up / KL annealing (issue 13, item 4): `model.beta_schedule` against its closed
form, the loss of each training step at that step's β (from the logged decomposition), exact
resume through a warm-up, and the config's errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmtrain.config import ModelSection, config_from_dict
from mmtrain.errors import ConfigError
from mmtrain.objectives import beta_at_step
from mmtrain.train.loop import train
from tests.helpers import tiny_config


def section(kind: str, warmup: int = 0, start: float = 0.0, beta: float = 1.0) -> ModelSection:
    schedule = {"kind": kind, "warmup_steps": warmup, "start": start}
    config = config_from_dict({"model": {"beta": beta, "beta_schedule": schedule}})
    return config.model


@pytest.mark.parametrize(
    ("step", "linear", "cosine"),
    [
        # β = 2, start 0.25, W = 8: β(t) = 2 (0.25 + 0.75 u), u = t / 8, or u = (1 − cos πt/8) / 2
        (0, 0.5, 0.5),
        (2, 0.875, 2 * (0.25 + 0.75 * (1 - math.cos(math.pi / 4)) / 2)),
        (4, 1.25, 1.25),
        (6, 1.625, 2 * (0.25 + 0.75 * (1 - math.cos(3 * math.pi / 4)) / 2)),
        (8, 2.0, 2.0),
        (1000, 2.0, 2.0),
    ],
)
def test_schedule_matches_its_closed_form(step: int, linear: float, cosine: float) -> None:
    assert beta_at_step(section("linear", 8, 0.25, beta=2.0), step) == pytest.approx(linear)
    assert beta_at_step(section("cosine", 8, 0.25, beta=2.0), step) == pytest.approx(cosine)
    assert beta_at_step(section("constant", beta=2.0), step) == 2.0


def test_cosine_warm_up_is_slow_at_both_ends() -> None:
    cosine = section("cosine", 100, 0.0)
    assert beta_at_step(cosine, 1) < 0.001 and beta_at_step(cosine, 99) > 0.999
    assert beta_at_step(cosine, 50) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"kind": "constant", "warmup_steps": 10}, "no effect with kind constant"),
        ({"kind": "linear"}, "kind linear needs model.beta_schedule.warmup_steps ≥ 1"),
        ({"kind": "cosine", "warmup_steps": -1}, "warmup_steps must be ≥ 0"),
        ({"kind": "linear", "warmup_steps": 5, "start": 1.5}, "must be in \\[0, 1\\]"),
        ({"kind": "sigmoid", "warmup_steps": 5}, "must be one of 'constant', 'linear'"),
        ({"kind": "linear", "warmup": 5}, "did you mean 'model.beta_schedule.warmup_steps'"),
    ],
)
def test_bad_schedules_are_config_errors(schedule: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"model": {"beta_schedule": schedule}})


def logged_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").open()]


def test_each_steps_loss_uses_that_steps_beta(tmp_path: Path) -> None:
    """Logging every step: the masked objective (L = 1) is
    R_marg + R_comp + β(t) (P_S − Q_S + Q_SF − Q_F), linear in the logged means; the line of
    step s holds the optimiser step t = s − 1."""
    config = tiny_config(
        tmp_path,
        "train.steps=6",
        "train.log_every=1",
        "model.beta=2.0",
        "model.beta_schedule={kind: linear, warmup_steps: 4, start: 0.1}",
    )
    train(config, progress=False)
    lines = logged_lines(tmp_path / "run")
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    for line in lines:
        beta = 2.0 * (0.1 + 0.9 * min(1.0, (line["step"] - 1) / 4))
        assert line["train/beta"] == pytest.approx(beta, rel=1e-12)
        kl_terms = line["train/P_S"] - line["train/Q_S"] + line["train/Q_SF"] - line["train/Q_F"]
        reconstruction = line["train/R_marg"] + line["train/R_comp"]
        value = line["train/masked_objective"]
        assert value == pytest.approx(reconstruction + beta * kl_terms, rel=1e-4, abs=1e-3)
        assert line["train/loss"] == pytest.approx(-value, rel=1e-4, abs=1e-3)
        if beta < 2.0:  # and not at the configured β: the test can tell them apart
            assert abs(value - (reconstruction + 2.0 * kl_terms)) > 1e-2


def test_resume_in_the_middle_of_a_warm_up_is_exact(tmp_path: Path) -> None:
    warm_up = (
        "model.beta_schedule={kind: cosine, warmup_steps: 10, start: 0.0}",
        "train.log_every=1",
    )
    straight = train(tiny_config(tmp_path / "a", *warm_up), progress=False)
    train(tiny_config(tmp_path / "b", *warm_up, "train.steps=5"), progress=False)
    resumed = train(tiny_config(tmp_path / "b", *warm_up), resume="latest", progress=False)
    a = load_file(str(Path(straight["checkpoint"]) / "model.safetensors"))
    b = load_file(str(Path(resumed["checkpoint"]) / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    betas = [line["train/beta"] for line in logged_lines(tmp_path / "b" / "run")]
    assert betas == [line["train/beta"] for line in logged_lines(tmp_path / "a" / "run")]
