"""Typed registries: every pluggable piece of mmtrain is looked up here by name.

Built-ins register with a decorator when their module is imported. Outside packages declare an
entry point in the group `mmtrain.plugins` whose target is a module (importing it registers
things) or a function with no arguments that registers things:

    [project.entry-points."mmtrain.plugins"]
    signal = "mmtrain_signal"

The first lookup imports the built-ins, then loads every entry point. A plugin package that
fails to load is recorded (`failed_plugins()`), reported once as a `PluginLoadWarning`, and
rolled back, so the other plugins keep working. Each entry remembers the distribution that
provides it; `provenance()` turns that into a JSON record for configs and checkpoints, and
`check_provenance()` says which package to install when a recorded plugin is missing.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import importlib.metadata as metadata
import inspect
import re
import threading
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from mmtrain._version import __version__
from mmtrain.errors import PluginError, did_you_mean

T = TypeVar("T")

ENTRY_POINT_GROUP = "mmtrain.plugins"

BUILTIN_MODULES: tuple[str, ...] = (
    "mmtrain.plugins",
    "mmtrain.objectives",
    "mmtrain.priors",
    "mmtrain.likelihoods",
    "mmtrain.kernels",
    "mmtrain.data.embedded",
    "mmtrain.data.digits",
    "mmtrain.data.polymnist",
    "mmtrain.data.mnist_svhn_text",
)

#: A provenance record: {kind: {name: {"package": ..., "version": ...}}}, JSON-safe.
ProvenanceRecord = dict[str, dict[str, dict[str, str | None]]]


class PluginLoadWarning(UserWarning):
    """A plugin package could not be loaded; the other plugins still work."""


class PluginVersionWarning(UserWarning):
    """A recorded plugin is installed, but from another package or version."""


@dataclass(frozen=True)
class Source:
    """The distribution that provides a registered object."""

    package: str
    version: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {"package": self.package, "version": self.version}


@dataclass(frozen=True)
class PluginFailure:
    """An entry point of `package` that raised while loading."""

    package: str
    version: str | None
    entry_point: str
    target: str
    error: str

    def __str__(self) -> str:
        version = f" {self.version}" if self.version else ""
        return f"{self.package}{version} ({self.entry_point} = {self.target}): {self.error}"


@dataclass
class Entry(Generic[T]):
    """One registered object and where it came from."""

    name: str
    obj: T
    module: str
    doc: str
    kind: str = ""
    source: Source | None = None

    @property
    def package(self) -> str:
        return self._source().package

    @property
    def version(self) -> str | None:
        return self._source().version

    def _source(self) -> Source:
        if self.source is None:
            self.source = _source_of_module(self.module)
        return self.source

    def provenance(self) -> dict[str, str | None]:
        """`{"package": ..., "version": ...}` for a config or checkpoint."""
        return self._source().as_dict()


@dataclass
class Registry(Generic[T]):
    """A name → object table for one kind of plugin."""

    kind: str
    _entries: dict[str, Entry[T]] = field(default_factory=dict)

    def register(
        self, name: str, obj: T | None = None, *, override: bool = False
    ) -> Callable[[T], T] | T:
        """Register `obj` under `name`; usable as `@registry.register("name")`.

        A name already taken by another object raises `PluginError` unless `override=True`.
        """

        def add(target: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and not override:
                if existing.obj is target:
                    return target
                raise PluginError(
                    f"{self.kind} {name!r} is already registered by {existing.package} "
                    f"({existing.module}); pass override=True to replace it"
                )
            module = getattr(target, "__module__", "") or ""
            doc = _summary(target)
            source = _loading.source if _loading.source else _builtin_source(module)
            self._entries[name] = Entry(name, target, module, doc, self.kind, source)
            if _loading.source is not None:
                _loading.added.append((self, name, existing))
            return target

        if obj is not None:
            return add(obj)
        return add

    def get(self, name: str) -> T:
        """The object registered as `name`; unknown names fail with the known ones."""
        return self.entry(name).obj

    def registered(self, name: str) -> T | None:
        """The object registered as `name` so far, without loading built-ins or plugins."""
        entry = self._entries.get(name)
        return None if entry is None else entry.obj

    def entry(self, name: str) -> Entry[T]:
        """The registry entry (object, module, provenance) for `name`."""
        ensure_loaded()
        if name not in self._entries:
            raise PluginError(self._unknown_message(name))
        return self._entries[name]

    def _unknown_message(self, name: str) -> str:
        known = sorted(self._entries)
        message = (
            f"unknown {self.kind} {name!r}{did_you_mean(name, known)} Known: {', '.join(known)}"
        )
        failures = failed_plugins()
        if failures:
            message += ". Plugin packages that failed to load: " + "; ".join(
                f"{f.package} ({f.error})" for f in failures
            )
        return message

    def names(self) -> list[str]:
        ensure_loaded()
        return sorted(self._entries)

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style wildcard, e.g. `"self_attention*"`."""
        return [name for name in self.names() if fnmatch.fnmatchcase(name, pattern)]

    def entries(self, pattern: str = "*") -> list[Entry[T]]:
        return [self._entries[name] for name in self.list(pattern)]

    def name_of(self, obj: object) -> str:
        """The name under which `obj` (a class or function) is registered."""
        ensure_loaded()
        for entry in self._entries.values():
            if entry.obj is obj:
                return entry.name
        raise PluginError(f"{obj!r} is not a registered {self.kind}")

    def unregister(self, name: str) -> None:
        """Remove `name` (tests and plugin reloading)."""
        self._entries.pop(name, None)

    def __contains__(self, name: object) -> bool:
        ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


AGGREGATORS: Registry = Registry("aggregator")
MODALITIES: Registry = Registry("modality")
OBJECTIVES: Registry = Registry("objective")
PRIORS: Registry = Registry("prior")
LIKELIHOODS: Registry = Registry("likelihood")
DATASETS: Registry = Registry("dataset")
OPS: Registry = Registry("kernel op")

#: every registry by its kind, the keys of a provenance record
REGISTRIES: dict[str, Registry] = {
    r.kind: r for r in (MODALITIES, AGGREGATORS, OBJECTIVES, PRIORS, LIKELIHOODS, DATASETS, OPS)
}


def _summary(target: object) -> str:
    """The first paragraph of the docstring, or an instance's own `description`."""
    description = getattr(target, "description", None)
    if not isinstance(target, type) and isinstance(description, str) and description:
        return description
    return " ".join((getattr(target, "__doc__", "") or "").strip().split("\n\n")[0].split())


class _LoadingState(threading.local):
    def __init__(self) -> None:
        self.source: Source | None = None
        self.added: list[tuple[Registry, str, Entry | None]] = []


_loading = _LoadingState()
_lock = threading.RLock()
_builtins_loaded = False
_plugins_loaded = False
_discovering = False
_loaded_entry_points: set[tuple[str, str, str]] = set()
_failures: list[PluginFailure] = []
_module_sources: dict[str, Source] = {}


def _mmtrain_source() -> Source:
    if "mmtrain" not in _module_sources:
        try:
            version = metadata.version("mmtrain")
        except metadata.PackageNotFoundError:
            version = __version__
        _module_sources["mmtrain"] = Source("mmtrain", version)
    return _module_sources["mmtrain"]


def _builtin_source(module: str) -> Source | None:
    if module == "mmtrain" or module.startswith("mmtrain."):
        return _mmtrain_source()
    return None


def _source_of_module(module: str) -> Source:
    """The installed distribution whose files provide `module`'s top-level package."""
    builtin = _builtin_source(module)
    if builtin is not None:
        return builtin
    top = module.split(".")[0] or "<unknown>"
    if top not in _module_sources:
        names = metadata.packages_distributions().get(top, [])
        if names:
            _module_sources[top] = Source(names[0], metadata.version(names[0]))
        else:
            _module_sources[top] = Source(top, None)
    return _module_sources[top]


def load_builtins() -> None:
    """Import the built-in modules once so their decorators run."""
    global _builtins_loaded
    with _lock:
        if _builtins_loaded:
            return
        _builtins_loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def ensure_loaded() -> None:
    """Load the built-ins and discover the installed plugins (once)."""
    if _builtins_loaded and _plugins_loaded:
        return
    load_builtins()
    discover_plugins()


def _distribution(entry_point: metadata.EntryPoint) -> Source:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return Source(entry_point.module.split(".")[0], None)
    return Source(dist.metadata["Name"] or dist.name, dist.version)


def _load_entry_point(entry_point: metadata.EntryPoint) -> None:
    target = entry_point.load()
    if isinstance(target, types.ModuleType):
        return
    if isinstance(target, type) or not callable(target):
        raise PluginError(
            f"entry point {entry_point.name} = {entry_point.value} must name a module or a "
            f"function that registers plugins, not {type(target).__name__}"
        )
    target()


def discover_plugins(force: bool = False) -> list[PluginFailure]:
    """Load every `mmtrain.plugins` entry point not loaded yet; return the new failures.

    Runs once on the first lookup; `force=True` scans again (after installing a package in
    the running process). Lookups made by a plugin while it loads see what is loaded so far;
    other threads wait until discovery ends.
    """
    global _plugins_loaded, _discovering
    with _lock:
        if (_plugins_loaded and not force) or _discovering:
            return []
        _discovering = True
        try:
            load_builtins()
            importlib.invalidate_caches()
            new_failures = []
            for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
                source = _distribution(entry_point)
                key = (source.package, entry_point.name, entry_point.value)
                if key in _loaded_entry_points:
                    continue
                _loaded_entry_points.add(key)
                failure = _load_one(entry_point, source)
                if failure is not None:
                    new_failures.append(failure)
            _failures.extend(new_failures)
        finally:
            _discovering, _plugins_loaded = False, True
        for failure in new_failures:
            warnings.warn(
                f"mmtrain plugin package {failure.package} failed to load: {failure.error}",
                PluginLoadWarning,
                stacklevel=3,
            )
        return new_failures


def _load_one(entry_point: metadata.EntryPoint, source: Source) -> PluginFailure | None:
    previous_source, previous_added = _loading.source, _loading.added
    _loading.source, _loading.added = source, []
    try:
        _load_entry_point(entry_point)
    except Exception as error:  # noqa: BLE001 - a broken plugin must not break the others
        for registry, name, replaced in reversed(_loading.added):
            if replaced is None:
                registry._entries.pop(name, None)
            else:
                registry._entries[name] = replaced
        return PluginFailure(
            source.package,
            source.version,
            entry_point.name,
            entry_point.value,
            f"{type(error).__name__}: {error}",
        )
    finally:
        _loading.source, _loading.added = previous_source, previous_added
    return None


def failed_plugins() -> list[PluginFailure]:
    """Plugin packages whose entry point raised while loading, with the error."""
    return list(_failures)


def list_plugins(pattern: str = "*", kind: str | None = None) -> list[Entry]:
    """Entries of every registry (or one kind) whose name matches a wildcard pattern."""
    registries = [registry_for(kind)] if kind else list(REGISTRIES.values())
    return [entry for registry in registries for entry in registry.entries(pattern)]


def registry_for(kind: str) -> Registry:
    """The registry of one kind (`modality`, `aggregator`, …)."""
    if kind not in REGISTRIES:
        hint = did_you_mean(kind, REGISTRIES)
        raise PluginError(f"unknown plugin kind {kind!r}{hint} Known: {', '.join(REGISTRIES)}")
    return REGISTRIES[kind]


def provenance(used: Mapping[str, Iterable[str]]) -> ProvenanceRecord:
    """The JSON record of the plugins a model uses: `{kind: {name: {package, version}}}`.

    `used` maps a kind to registry names, e.g. `{"modality": ["image", "text"],
    "aggregator": ["sum_pooling"]}`; unknown names raise `PluginError`.
    """
    record: ProvenanceRecord = {}
    for kind, names in used.items():
        registry = registry_for(kind)
        record[kind] = {name: registry.entry(name).provenance() for name in sorted(set(names))}
    return record


def check_provenance(record: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """Check a stored provenance record against the live registry.

    A missing plugin raises `PluginError` naming the package (and version) to install, or the
    load error if that package is installed but broken. A plugin that is present from another
    package or version gives a `PluginVersionWarning`; the messages are returned.
    """
    ensure_loaded()
    missing, notes = [], []
    failures = {_normalise(f.package): f for f in failed_plugins()}
    for kind, names in record.items():
        registry = registry_for(kind)
        for name, wanted in names.items():
            package, version = wanted.get("package"), wanted.get("version")
            if name not in registry._entries:
                label = f"{package} {version}" if version else str(package)
                reason = f"{kind} {name!r}"
                if not package:
                    reason += " is not installed and the record names no package"
                elif _normalise(package) in failures:
                    reason += f" (from {label}): {package} is installed but failed to load: "
                    reason += failures[_normalise(package)].error
                else:
                    pinned = f"{package}=={version}" if version else package
                    reason += f" (from {label}) is not installed; install it with "
                    reason += f"`pip install {pinned}`"
                missing.append(reason)
                continue
            entry = registry._entries[name]
            if package and _normalise(entry.package) != _normalise(package):
                notes.append(
                    f"{kind} {name!r} was recorded from {package} but is provided by "
                    f"{entry.package} {entry.version or ''}".rstrip()
                )
            elif version and entry.version != version:
                notes.append(
                    f"{kind} {name!r} was recorded with {package} {version}, "
                    f"installed is {entry.version}"
                )
    if missing:
        raise PluginError("missing plugins: " + "; ".join(missing))
    for note in notes:
        warnings.warn(note, PluginVersionWarning, stacklevel=2)
    return notes


def _normalise(package: str) -> str:
    """A distribution name in its canonical form (PEP 503)."""
    return re.sub(r"[-_.]+", "-", package).lower()


def plugins_of(model: Any) -> dict[str, list[str]]:
    """The registry names a `MultiModalVAE` uses, for `provenance(plugins_of(model))`.

    Modalities built by a `ModalityPlugin` remember their kind; the aggregator and prior are
    looked up by class.
    """
    used: dict[str, list[str]] = {}
    kinds = []
    for modality in model.modalities.values():
        plugin = getattr(modality, "plugin", None)
        if plugin is None:
            raise PluginError("a modality was not built by a registered ModalityPlugin")
        kinds.append(plugin.kind)
    used["modality"] = sorted(set(kinds))
    used["aggregator"] = [AGGREGATORS.name_of(type(model.aggregator))]
    used["prior"] = [PRIORS.name_of(type(model.prior))]
    return used


@contextmanager
def isolated() -> Iterator[None]:
    """Restore every registry and the plugin-loading state on exit (for tests).

    Entries that built-in modules register while imported for the first time inside the
    block are kept: their modules stay imported and would not register them again.
    """
    global _plugins_loaded
    load_builtins()
    with _lock:
        saved = {kind: dict(r._entries) for kind, r in REGISTRIES.items()}
        state = (_plugins_loaded, set(_loaded_entry_points), list(_failures))
    try:
        yield
    finally:
        with _lock:
            for kind, entries in saved.items():
                current = REGISTRIES[kind]._entries
                builtin = {
                    name: entry
                    for name, entry in current.items()
                    if name not in entries and _builtin_source(entry.module) is not None
                }
                current.clear()
                current.update(entries)
                current.update(builtin)
            _plugins_loaded = state[0]
            _loaded_entry_points.clear()
            _loaded_entry_points.update(state[1])
            _failures[:] = state[2]


@dataclass(frozen=True)
class OptionInfo:
    """One option of a registered object: name, type, default, documentation, choices."""

    name: str
    type: str
    default: Any
    doc: str = ""
    required: bool = False
    choices: tuple[Any, ...] | None = None


def describe_options(obj: Any) -> list[OptionInfo]:
    """The options of a registered class or function, for `mmtrain plugins info`.

    Dataclass plugins give their fields (documented with `mmtrain.modality.option`); other
    classes and functions give their keyword parameters, documented by an `Args:` section
    of their docstrings or an `option_docs` mapping on the class; a registered instance
    with a callable `builder` gives the builder's parameters.
    """
    if dataclasses.is_dataclass(obj) and isinstance(obj, type):
        options = []
        for spec in dataclasses.fields(obj):
            if not spec.init:
                continue
            default = spec.default
            if default is dataclasses.MISSING and spec.default_factory is not dataclasses.MISSING:
                default = spec.default_factory()
            required = default is dataclasses.MISSING
            options.append(
                OptionInfo(
                    spec.name,
                    spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", ""),
                    None if required else default,
                    spec.metadata.get("doc", ""),
                    required,
                    spec.metadata.get("choices"),
                )
            )
        return options
    if not callable(obj):
        builder = getattr(obj, "builder", None)
        return describe_options(builder) if callable(builder) else []
    target = obj.__init__ if isinstance(obj, type) else obj
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    docs: dict[str, str] = {}
    for holder in reversed(getattr(obj, "__mro__", (obj,))):
        docs |= _args_section(getattr(holder, "__doc__", None))
        init = getattr(holder, "__init__", None) if isinstance(obj, type) else None
        docs |= _args_section(getattr(init, "__doc__", None) if init else None)
        docs |= dict(getattr(holder, "option_docs", None) or {})
    options = []
    for index, param in enumerate(signature.parameters.values()):
        if index == 0 and isinstance(obj, type) and param.name == "self":
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = param.annotation
        if annotation is param.empty:
            annotation = ""
        elif not isinstance(annotation, str):
            annotation = getattr(annotation, "__name__", str(annotation))
        required = param.default is param.empty
        default = None if required else param.default
        options.append(
            OptionInfo(param.name, annotation, default, docs.get(param.name, ""), required)
        )
    return options


def _args_section(doc: str | None) -> dict[str, str]:
    """`name: text` entries of a Google-style `Args:` section."""
    if not doc:
        return {}
    lines = inspect.cleandoc(doc).splitlines()
    found: dict[str, str] = {}
    inside, current, indent = False, "", 0
    for line in lines:
        if re.match(r"^(Args|Arguments|Options|Parameters):\s*$", line):
            inside, current, indent = True, "", 0
            continue
        if not inside or not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:
            inside = False
            continue
        match = re.match(r"^\s*(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
        if match and (indent == 0 or depth == indent):
            indent, current = depth, match.group(1)
            found[current] = match.group(2).strip()
        elif current:
            found[current] = f"{found[current]} {line.strip()}".strip()
    return found
