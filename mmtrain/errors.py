"""Errors that say what is wrong, where, and how to fix it.

The CLI prints any `MMTrainError` in one or two lines and exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MMTrainError(Exception):
    """Base class of every error mmtrain raises on purpose."""


class ConfigError(MMTrainError, ValueError):
    """A setting, option or combination of options is invalid."""


class DataError(MMTrainError, ValueError):
    """A dataset row, cell or file cannot be used."""


class PluginError(MMTrainError, LookupError):
    """A plugin is unknown, duplicated, or failed to load."""


class CheckpointError(MMTrainError):
    """A checkpoint is missing, corrupt, or incompatible with the requested model."""


class HubError(MMTrainError):
    """The Hugging Face Hub cannot be reached, refuses a request, or lacks the model; or an
    `hf://` URI or repository id is malformed."""


def did_you_mean(name: object, known: Iterable[object], *, prefix: str = "") -> str:
    """`"; did you mean 'x'?"` naming the entry of `known` closest to `name` (written after
    `prefix`, e.g. a key path), or `""` when none is close."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f"; did you mean {prefix + close[0]!r}?" if close else ""
