"""`mmtrain.schema`: the one converter behind the training config, the data config and the
modality plugins' options — conversions, and the content of each error message (key path,
closest valid key, allowed values)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from mmtrain.config import config_from_dict
from mmtrain.data.config import DataConfig
from mmtrain.errors import ConfigError, did_you_mean
from mmtrain.modality import create_modality
from mmtrain.schema import build, check_choice, check_keys, convert


@dataclass
class Inner:
    size: int = 1
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: str = field(metadata={"doc": "what it is called"})
    inner: Inner = field(default_factory=Inner)
    shape: tuple[int, ...] = (1,)
    pair: tuple[int, float] = (0, 0.0)
    weights: dict[str, float] = field(default_factory=dict)
    items: list[int] = field(default_factory=list)
    limit: int | None = None
    where: Path = Path(".")
    act: str = field(default="relu", metadata={"choices": ("relu", "tanh")})
    extra: Any = None


def test_scalars_convert_and_reject_the_wrong_type() -> None:
    assert convert(3, float, "x") == 3.0 and isinstance(convert(3, float, "x"), float)
    assert convert(True, bool, "x") is True
    assert convert("p", Path, "x") == Path("p")
    assert convert({"any": 1}, Any, "x") == {"any": 1}
    cases = [
        (True, int, "x must be an integer, got True"),
        ("3", int, "x must be an integer, got '3'"),
        (False, float, "x must be a number, got False"),
        (1, bool, "x must be true or false, got 1"),
        (1, str, "x must be a string, got 1"),
        (1, Path, "x must be a path, got 1"),
    ]
    for value, hint, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            convert(value, hint, "x")


def test_containers_and_unions_convert_with_key_paths() -> None:
    assert convert([1, 2], tuple[int, ...], "s") == (1, 2)
    assert convert([1, 2], tuple[int, float], "s") == (1, 2.0)
    assert convert({"a": 1}, dict[str, float], "w") == {"a": 1.0}
    assert convert((1, 2), list[int], "l") == [1, 2]
    assert convert(None, int | None, "n") is None
    assert convert(4, int | None, "n") == 4
    with pytest.raises(ConfigError, match=re.escape("s[1] must be an integer, got 'x'")):
        convert([1, "x"], tuple[int, ...], "s")
    with pytest.raises(ConfigError, match=re.escape("s must have 2 values, got [1]")):
        convert([1], tuple[int, float], "s")
    with pytest.raises(ConfigError, match=re.escape("w.b must be a number, got 'x'")):
        convert({"a": 1, "b": "x"}, dict[str, float], "w")
    with pytest.raises(ConfigError, match="w must be a mapping, got list"):
        convert([1], dict[str, float], "w")
    with pytest.raises(ConfigError, match="n must be an integer, got 'x'"):
        convert("x", int | None, "n")


def test_literals_and_choices_name_the_allowed_values_and_the_closest() -> None:
    assert convert("b", Literal["a", "b"], "m") == "b"
    with pytest.raises(
        ConfigError, match=re.escape("m must be one of 'normal', 'laplace', got 'laplce'")
    ) as caught:
        convert("laplce", Literal["normal", "laplace"], "m")
    assert "did you mean 'laplace'?" in str(caught.value)
    with pytest.raises(ConfigError, match=re.escape("act must be one of 'relu', 'tanh'")):
        check_choice("gelu", ("relu", "tanh"), "act")


def test_dataclasses_build_from_mappings() -> None:
    built = build(
        Outer,
        {"name": "n", "inner": {"size": 2}, "shape": [3, 4], "weights": {"x": 1}, "where": "d"},
        "top",
    )
    assert built.inner == Inner(2, "a") and built.shape == (3, 4)
    assert built.weights == {"x": 1.0} and built.where == Path("d")
    assert convert(built, Outer, "top") is built


def test_dataclass_errors_name_the_key_path_closest_key_and_missing_fields() -> None:
    with pytest.raises(ConfigError) as caught:
        build(Outer, {"name": "n", "inner": {"sise": 2}}, "top")
    message = str(caught.value)
    assert "unknown key 'top.inner.sise'" in message
    assert "did you mean 'top.inner.size'?" in message and "Known: size, mode" in message
    with pytest.raises(ConfigError, match=re.escape("top needs 'name' (what it is called)")):
        build(Outer, {}, "top")
    with pytest.raises(ConfigError, match=re.escape("top.inner.mode must be one of 'a', 'b'")):
        build(Outer, {"name": "n", "inner": {"mode": "c"}}, "top")
    with pytest.raises(ConfigError, match=re.escape("top.act must be one of 'relu', 'tanh'")):
        build(Outer, {"name": "n", "act": "gelu"}, "top")
    with pytest.raises(ConfigError, match="top.inner must be a mapping, got 3"):
        build(Outer, {"name": "n", "inner": 3}, "top")


def test_did_you_mean_and_check_keys() -> None:
    assert did_you_mean("imag", ["image", "text"]) == "; did you mean 'image'?"
    assert did_you_mean("zzz", ["image", "text"]) == ""
    assert did_you_mean("sise", ["size"], prefix="a.") == "; did you mean 'a.size'?"
    with pytest.raises(
        ConfigError,
        match=re.escape("unknown option 'hieght' for modality 'x'; did you mean 'height'?"),
    ):
        check_keys({"hieght": 1}, ["height", "width"], what="option", owner=" for modality 'x'")


def test_the_training_config_uses_it() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"model": {"latnt_dim": 3}})
    assert "unknown key 'model.latnt_dim'; did you mean 'model.latent_dim'?" in str(caught.value)
    with pytest.raises(ConfigError, match="train.mixed_precision must be one of 'no', 'bf16'"):
        config_from_dict({"train": {"mixed_precision": "fp8"}})
    with pytest.raises(ConfigError, match="model.latent_dim must be an integer, got 'two'"):
        config_from_dict({"model": {"latent_dim": "two"}})
    config = config_from_dict({"model": {"beta": 2, "reconstruction_weights": {"a": 1}}})
    assert config.model.beta == 2.0 and config.model.reconstruction_weights == {"a": 1.0}
    assert config_from_dict(config.to_dict()) == config


def test_the_data_config_uses_it() -> None:
    with pytest.raises(ConfigError, match=re.escape("data needs 'source' (a dataset name")):
        config_from_dict({"data": {"batch_size": 4}})
    with pytest.raises(ConfigError, match="data.modalities.a needs 'kind'"):
        config_from_dict({"data": {"source": "x", "modalities": {"a": {"column": "a"}}}})
    with pytest.raises(ConfigError, match="data.shuffle must be true or false, got 'yes'"):
        DataConfig("x", shuffle="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="data.format must be one of 'parquet', 'arrow'"):
        DataConfig("x", format="csv")  # type: ignore[arg-type]
    data = config_from_dict(
        {"data": {"source": "x", "label_columns": "id", "modalities": {"a": {"kind": "vector"}}}}
    ).data
    assert data.label_columns == ("id",) and data.modalities["a"].column == "a"
    assert DataConfig.from_dict(data.to_dict()) == data


def test_plugin_options_use_it() -> None:
    with pytest.raises(ConfigError, match="image option 'height' must be an integer, got '28'"):
        create_modality("image", {"height": "28"})
    with pytest.raises(ConfigError, match="image option 'act' must be one of .*'relu'"):
        create_modality("image", {"act": "rleu"})
    assert create_modality("vector", {"shape": [2, 3]}).shape == (2, 3)


def test_yaml_boolean_words_are_read_back_as_the_choice() -> None:
    """YAML 1.1 reads `mixed_precision: no` (and `--set train.mixed_precision=no`) as False."""
    config = config_from_dict(yaml.safe_load("train: {mixed_precision: no}"))
    assert config.train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="must be one of 'no', 'bf16', 'fp16', got True"):
        config_from_dict(yaml.safe_load("train: {mixed_precision: yes}"))
