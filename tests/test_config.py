"""Loading a training config (`mmtrain.config.load_config`): a YAML file plus `key=value`
overrides, with bad values and impossible combinations refused as one-line `ConfigError`s."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmtrain.errors import ConfigError
from tests.helpers import tiny_config


@pytest.mark.parametrize(
    "override,needle",
    [
        ("optim.lr=-0.1", "optim.lr must be positive"),
        ("data.batch_size=0", "data.batch_size must be a positive integer"),
        ("model.latnt_dim=3", "did you mean 'model.latent_dim'"),
        ("train.mixed_precision=fp8", "train.mixed_precision must be one of"),
        ("model.latent_dim=two", "model.latent_dim must be an integer"),
    ],
)
def test_bad_config_values(tmp_path: Path, override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        tiny_config(tmp_path, override)


def test_poe_with_mixture_prior_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="poe needs a single-component prior"):
        tiny_config(tmp_path, "model.aggregator=poe", "model.prior={kind: mixture, components: 3}")


def test_exponent_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    from mmtrain.config import load_config
    from tests.helpers import TINY_TRAIN_CONFIG

    path = tmp_path / "config.yaml"
    path.write_text(TINY_TRAIN_CONFIG + "optim: {lr: 1e-3}\n")
    assert load_config(path).optim.lr == 0.001
    assert load_config(path, ["optim.lr=2e-3"]).optim.lr == 0.002
    assert load_config(path, ["output_dir=1e3x"]).output_dir == "1e3x"
