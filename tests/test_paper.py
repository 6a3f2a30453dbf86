"""The paper's experiments as configs (`mmtrain.paper`): every shipped config validates, the
flags map to config keys, and each experiment runs end to end through the training loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmtrain.config import config_from_dict, load_config
from mmtrain.errors import ConfigError
from mmtrain.paper import (
    EXPERIMENTS,
    ExperimentOptions,
    config_path,
    experiment_config,
    run_experiment,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path) -> None:
    config = load_config(path)
    assert config_from_dict(config.to_dict()) == config


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_the_installed_config_is_the_repository_file(name: str) -> None:
    assert yaml.safe_load(config_path(name).read_text()) == yaml.safe_load(
        (CONFIGS / "paper" / f"{name}.yaml").read_text()
    )


def test_flags_become_config_keys() -> None:
    options = ExperimentOptions(
        aggregator="self_attention",
        objective="mixture",
        steps=7,
        modalities=3,
        seed=4,
        lr=2e-3,
        components=1,
        is_samples=9,
        poe_reference_bug=True,
        output_dir="out",
    )
    config = experiment_config("linear-gaussian", options, ["train.log_every=3"])
    assert (config.model.aggregator, config.model.objective) == ("self_attention", "mixture")
    assert config.train.steps == 7 and config.train.log_every == 3
    # M modalities: latent 5 (M + 1), features 2 · latent
    assert config.data.options["num_modalities"] == 3
    assert (config.model.latent_dim, config.model.feature_dim) == (20, 40)
    assert config.seed == config.data.seed == config.data.options["seed"] == 4
    assert config.optim.lr == 2e-3 and config.train.eval_is_samples == 9
    assert config.model.prior.components == 1 and config.model.prior.kind == "fixed"
    assert config.model.aggregator_options == {"poe_reference_bug": True}
    assert config.output_dir == "out"


def test_default_output_directory_names_the_run() -> None:
    config = experiment_config("ivae-bimodal", ExperimentOptions(aggregator="moe", seed=3))
    assert config.output_dir == "runs/experiment/ivae-bimodal/moe-masked-seed3"


def test_bad_flags_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="exactly two modalities"):
        experiment_config("ivae-bimodal", ExperimentOptions(modalities=3))
    with pytest.raises(ConfigError, match="unknown experiment"):
        config_path("mnist")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_experiment_runs_through_the_training_loop(name: str, tmp_path: Path) -> None:
    small = ["data.options.condition_samples=200"] if name == "ivae-multimodal" else []
    options = ExperimentOptions(
        steps=3, num_examples=600, batch_size=100, is_samples=4, output_dir=str(tmp_path)
    )
    result = run_experiment(name, experiment_config(name, options, small), progress=False)
    assert result["steps"] == 3 and result["settings"]["experiment"] == name
    assert (tmp_path / "metrics.jsonl").is_file() and (tmp_path / "checkpoints").is_dir()
    assert "masked_objective" in result and "is_ll" in result and "elbo" in result
    if name == "linear-gaussian":
        assert {"exact_ll", "mle_ll", "true_ll", "rel_model_gap"} <= set(result)
    else:
        assert set(result["mcc"]) == {"weak_in", "weak_out", "strong_in", "strong_out"}
    if name == "ivae-multimodal":
        assert "is_ll_test" in result and len(result["mcc_pairs"]) == 6


def test_poe_with_a_mixture_prior_is_refused(tmp_path: Path) -> None:
    options = ExperimentOptions(aggregator="poe", steps=1, output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="poe.*component"):
        run_experiment("ivae-bimodal", experiment_config("ivae-bimodal", options), progress=False)


def test_compile_flag_sets_train_compile() -> None:
    assert experiment_config("ivae-bimodal").train.compile is False
    config = experiment_config("ivae-bimodal", ExperimentOptions(compile=True))
    assert config.train.compile is True and config.train.compile_backend == "inductor"
