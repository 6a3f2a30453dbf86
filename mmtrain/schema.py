"""One converter from YAML/JSON values to typed settings, shared by the training config, the
data config and the modality plugins' options.

`convert(value, hint, path)` checks `value` against a type hint — a dataclass, `Literal`,
`Optional`/`Union`, `list`/`tuple`/`dict[...]`, `int`/`float`/`bool`/`str`, `Path` or `Any` —
and returns it converted (lists to tuples, ints to floats, mappings to dataclasses), or
raises `ConfigError` naming the key path, the closest valid key of an unknown dataclass field
and the allowed values of a `Literal` or of a field's `choices` metadata.

It is written here rather than with pydantic because pydantic is not a dependency of the core
install, and a small converter over the existing dataclasses keeps the error messages as they
are.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from mmtrain.errors import ConfigError, did_you_mean

T = TypeVar("T")


#: the words YAML 1.1 reads as booleans (`mixed_precision: no` is False)
_YAML_BOOLEAN_WORDS = {False: ("no", "false", "off"), True: ("yes", "true", "on")}


def _yaml_word(value: object, choices: Sequence[object]) -> object:
    """A boolean where the choices are words: the word YAML read as that boolean."""
    if isinstance(value, bool) and True not in choices and False not in choices:
        for word in _YAML_BOOLEAN_WORDS[value]:
            if word in choices:
                return word
    return value


def join(path: str, key: object) -> str:
    """The key path of `key` under `path` (`"model" + "beta"` → `"model.beta"`)."""
    return f"{path}.{key}" if path else str(key)


def check_keys(
    values: Iterable[object],
    known: Sequence[str],
    path: str = "",
    *,
    what: str = "key",
    owner: str = "",
) -> None:
    """Raise `ConfigError` for the first of `values` not in `known`, naming the closest known
    key (under `path`) and all of them: `unknown key 'model.latnt_dim'; did you mean
    'model.latent_dim'? Known: …`. `owner` follows the key, e.g. `" for modality 'image'"`."""
    for key in values:
        if key not in known:
            hint = did_you_mean(key, known, prefix=join(path, "") if path else "")
            raise ConfigError(
                f"unknown {what} {join(path, key)!r}{owner}{hint} Known: {', '.join(known)}"
            )


def check_choice(value: object, choices: Iterable[object], path: str) -> None:
    """Raise `ConfigError` naming the allowed values unless `value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        allowed = ", ".join(map(repr, choices))
        hint = did_you_mean(value, choices)
        raise ConfigError(f"{path} must be one of {allowed}, got {value!r}{hint}")


def convert(value: Any, hint: Any, path: str, *, choices: Iterable[object] | None = None) -> Any:
    """`value` checked against the type `hint` and converted; `path` names it in errors.
    `choices`, when given, are the allowed values (after conversion)."""
    converted = _convert(value, hint, path)
    if choices is not None:
        check_choice(converted, choices, path)
    return converted


def convert_fields(obj: Any, where: Callable[[str], str]) -> None:
    """Convert every field of the dataclass instance `obj` in place (frozen ones too), each
    named in errors by `where(field_name)`; fields may declare `choices` in their metadata."""
    hints = typing.get_type_hints(type(obj))
    for spec in dataclasses.fields(obj):
        value = convert(
            getattr(obj, spec.name),
            hints.get(spec.name, Any),
            where(spec.name),
            choices=spec.metadata.get("choices"),
        )
        object.__setattr__(obj, spec.name, value)


def build(cls: type[T], values: object, path: str = "") -> T:
    """The dataclass `cls` from a mapping: unknown keys fail with the closest valid key,
    missing required fields with their `doc` metadata (`data needs 'source' (…)`), values
    by their field types."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{path or 'the config'} must be a mapping, got {values!r}")
    specs = {spec.name: spec for spec in dataclasses.fields(cls) if spec.init}
    check_keys(values, list(specs), path)
    for name, spec in specs.items():
        required = spec.default is dataclasses.MISSING
        if required and spec.default_factory is dataclasses.MISSING and name not in values:
            doc = spec.metadata.get("doc")
            doc = f" ({doc})" if doc else ""
            raise ConfigError(f"{path or 'the config'} needs {name!r}{doc}")
    hints = typing.get_type_hints(cls)
    kwargs = {
        str(key): convert(
            value, hints[key], join(path, key), choices=specs[key].metadata.get("choices")
        )
        for key, value in values.items()
    }
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# one converter per kind of hint


def _convert(value: Any, hint: Any, path: str) -> Any:
    if hint is Any or hint is None:
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return value if isinstance(value, hint) else build(hint, value, path)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _union(value, typing.get_args(hint), path)
    if origin is Literal:
        choices = typing.get_args(hint)
        value = _yaml_word(value, choices)
        check_choice(value, choices, path)
        return value
    if origin is not None:
        container = _CONTAINERS.get(origin)
        if container is None:
            raise ConfigError(f"{path}: unsupported type {hint}")
        return container(value, typing.get_args(hint), path)
    scalar = _SCALARS.get(hint)
    if scalar is not None:
        return scalar(value, path)
    if isinstance(hint, type):
        if not isinstance(value, hint):
            raise ConfigError(f"{path} must be a {hint.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported type {hint}")


def _union(value: Any, options: tuple[Any, ...], path: str) -> Any:
    if value is None and type(None) in options:
        return None
    errors: list[ConfigError] = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _convert(value, option, path)
        except ConfigError as error:
            errors.append(error)
    raise errors[0] if errors else ConfigError(f"{path}: invalid value {value!r}")


def _dict(value: Any, args: tuple[Any, ...], path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path} must be a mapping, got {type(value).__name__}")
    item = args[1] if len(args) == 2 else Any
    return {str(k): _convert(v, item, join(path, k)) for k, v in value.items()}


def _list(value: Any, args: tuple[Any, ...], path: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{path} must be a list, got {type(value).__name__}")
    item = args[0] if args else Any
    return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]


def _tuple(value: Any, args: tuple[Any, ...], path: str) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{path} must be a list, got {value!r}")
    if not args or len(args) == 2 and args[1] is Ellipsis:
        item = args[0] if args else Any
        return tuple(_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if len(args) != len(value):
        raise ConfigError(f"{path} must have {len(args)} values, got {value!r}")
    return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path} must be true or false, got {value!r}")
    return value


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{path} must be an integer, got {value!r}")
    return int(value)


def _float(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{path} must be a number, got {value!r}")
    return float(value)


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{path} must be a string, got {value!r}")
    return value


def _path(value: Any, path: str) -> Path:
    if not isinstance(value, str | Path):
        raise ConfigError(f"{path} must be a path, got {value!r}")
    return Path(value)


_CONTAINERS: dict[Any, Callable[[Any, tuple[Any, ...], str], Any]] = {
    dict: _dict,
    list: _list,
    tuple: _tuple,
}
_SCALARS: dict[Any, Callable[[Any, str], Any]] = {
    bool: _bool,
    int: _int,
    float: _float,
    str: _str,
    Path: _path,
}


class _Yaml12FloatLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that also reads exponent floats without a dot as numbers."""


_Yaml12FloatLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse YAML as `yaml.safe_load` does, except that exponent floats without a dot
    (`1e-3`, `2E+5`), which YAML 1.1 reads as strings, are numbers as in YAML 1.2: an
    `--set optim.lr=2e-3` or `lr: 1e-3` means 0.001, not the string "2e-3"."""
    return yaml.load(text, Loader=_Yaml12FloatLoader)
