"""Typed registries: every pluggable piece of mmtrain is looked up here by name.

Built-ins register with a decorator when their module is imported; the registry imports the
built-in modules lazily on first lookup, so the core never imports plugins or kernels by name.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mmtrain.errors import PluginError

T = TypeVar("T")

BUILTIN_MODULES: tuple[str, ...] = (
    "mmtrain.plugins",
    "mmtrain.objectives",
    "mmtrain.priors",
    "mmtrain.likelihoods",
    "mmtrain.kernels",
)


@dataclass
class Entry(Generic[T]):
    """One registered object and where it came from."""

    name: str
    obj: T
    module: str
    doc: str


@dataclass
class Registry(Generic[T]):
    """A name → object table for one kind of plugin."""

    kind: str
    _entries: dict[str, Entry[T]] = field(default_factory=dict)

    def register(
        self, name: str, obj: T | None = None, *, override: bool = False
    ) -> Callable[[T], T] | T:
        """Register `obj` under `name`; usable as `@registry.register("name")`."""

        def add(target: T) -> T:
            if name in self._entries and not override:
                existing = self._entries[name]
                if existing.obj is target:
                    return target
                raise PluginError(
                    f"{self.kind} {name!r} is already registered by {existing.module}; "
                    "pass override=True to replace it"
                )
            module = getattr(target, "__module__", "") or ""
            doc = (getattr(target, "__doc__", "") or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, target, module, doc)
            return target

        if obj is not None:
            return add(obj)
        return add

    def get(self, name: str) -> T:
        """The object registered as `name`; unknown names fail with the known ones."""
        load_builtins()
        if name not in self._entries:
            known = sorted(self._entries)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PluginError(f"unknown {self.kind} {name!r}{hint} Known: {', '.join(known)}")
        return self._entries[name].obj

    def entry(self, name: str) -> Entry[T]:
        self.get(name)
        return self._entries[name]

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


AGGREGATORS: Registry = Registry("aggregator")
MODALITIES: Registry = Registry("modality")
OBJECTIVES: Registry = Registry("objective")
PRIORS: Registry = Registry("prior")
LIKELIHOODS: Registry = Registry("likelihood")
DATASETS: Registry = Registry("dataset")
OPS: Registry = Registry("kernel op")

_loaded = False


def load_builtins() -> None:
    """Import the built-in modules once so their decorators run."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
