"""`mmtrain plugins`: what is registered, which package provides it, and its options."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mmtrain.errors import PluginError, did_you_mean

#: documentation for the constructor arguments every aggregator shares (set by the model)
AGGREGATOR_ARGUMENTS = {
    "feature_dim": "size F of each modality's features (set by the model)",
    "latent_dim": "latent size d (set by the model)",
    "num_components": "mixture components K, as in the prior",
    "family": "posterior family: normal or laplace",
    "min_scale": "added to exp(log-scale) of the posterior",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from mmtrain.registry import REGISTRIES

    p = sub.add_parser(
        "plugins",
        help="list plugins and show their options",
        description="Plugins come from mmtrain itself and from installed packages that "
        "declare an entry point in the group `mmtrain.plugins`.",
    )
    actions = p.add_subparsers(dest="action", required=True)
    kinds = list(REGISTRIES)
    listing = actions.add_parser(
        "list", help="registered plugins with kind, package and version, and failed loads"
    )
    listing.add_argument("pattern", nargs="?", default="*", help="wildcard, e.g. 'sum*'")
    listing.add_argument("--kind", choices=kinds, help="only this kind")
    listing.add_argument("--json", action="store_true", help="print JSON")
    info = actions.add_parser("info", help="one plugin's documentation and options")
    info.add_argument("name")
    info.add_argument("--kind", choices=kinds, help="the kind, when the name is ambiguous")
    info.add_argument("--json", action="store_true", help="print JSON")


#: core modules that register plugins but are too heavy for every first lookup to import
LISTED_MODULES = ("mmtrain.data",)


def run(args: argparse.Namespace) -> int:
    import importlib

    for module in LISTED_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    if args.action == "list":
        return list_command(args.pattern, args.kind, args.json)
    return info_command(args.name, args.kind, args.json)


def _console() -> Any:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    return console


def list_command(pattern: str, kind: str | None, as_json: bool) -> int:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from mmtrain.registry import failed_plugins, list_plugins

    entries = list_plugins(pattern, kind)
    failures = failed_plugins()
    if as_json:
        print(
            json.dumps(
                {
                    "plugins": [
                        {
                            "name": e.name,
                            "kind": e.kind,
                            "package": e.package,
                            "version": e.version,
                            "module": e.module,
                            "doc": e.doc,
                        }
                        for e in entries
                    ],
                    "failed": [
                        {
                            "package": f.package,
                            "version": f.version,
                            "entry_point": f.entry_point,
                            "target": f.target,
                            "error": f.error,
                        }
                        for f in failures
                    ],
                },
                indent=2,
            )
        )
        return 0
    console = _console()
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for column in ("name", "kind", "package", "version", "description"):
        table.add_column(column, overflow="fold" if column == "description" else None)
    for e in entries:
        table.add_row(*map(Text, (e.name, e.kind, e.package, e.version or "-", e.doc)))
    if entries:
        console.print(table)
    else:
        console.print(f"no plugins match {pattern!r}" + (f" of kind {kind}" if kind else ""))
    if failures:
        failed = Table(
            title="plugin packages that failed to load", box=box.SIMPLE_HEAD, pad_edge=False
        )
        for column in ("package", "version", "entry point", "error"):
            failed.add_column(column, overflow="fold")
        for f in failures:
            cells = (f.package, f.version or "-", f"{f.entry_point} = {f.target}", f.error)
            failed.add_row(*map(Text, cells))
        console.print(failed)
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def _full_doc(obj: Any) -> str:
    import inspect

    doc = inspect.cleandoc(getattr(obj, "__doc__", "") or "")
    description = getattr(obj, "description", None)
    if not isinstance(obj, type) and isinstance(description, str) and description:
        return f"{description}\n\n{doc}".strip()
    return doc


def info_command(name: str, kind: str | None, as_json: bool) -> int:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from mmtrain.registry import REGISTRIES, describe_options, list_plugins, registry_for

    if kind:
        matches = [registry_for(kind).entry(name)]
    else:
        matches = [e for e in list_plugins() if e.name == name]
    if not matches:
        known = sorted({e.name for e in list_plugins()})
        raise PluginError(
            f"no plugin named {name!r}{did_you_mean(name, known)} (`mmtrain plugins list` "
            f"shows all {len(known)}; kinds: {', '.join(REGISTRIES)})"
        )
    described = []
    for entry in matches:
        options = describe_options(entry.obj)
        fallback = AGGREGATOR_ARGUMENTS if entry.kind == "aggregator" else {}
        described.append(
            {
                "name": entry.name,
                "kind": entry.kind,
                "package": entry.package,
                "version": entry.version,
                "module": entry.module,
                "doc": _full_doc(entry.obj),
                "options": [
                    {
                        "name": o.name,
                        "type": o.type,
                        "default": None if o.required else _jsonable(o.default),
                        "required": o.required,
                        "doc": o.doc or fallback.get(o.name, ""),
                        "choices": _jsonable(o.choices),
                    }
                    for o in options
                ],
            }
        )
    if as_json:
        print(json.dumps(described if len(described) > 1 else described[0], indent=2))
        return 0
    console = _console()
    for item in described:
        console.print(
            f"[bold]{item['name']}[/bold] ({item['kind']}) from {item['package']} "
            f"{item['version'] or ''}  [dim]{item['module']}[/dim]",
            highlight=False,
        )
        if item["doc"]:
            console.print(item["doc"], highlight=False, markup=False)
        if not item["options"]:
            console.print("options: none declared\n")
            continue
        table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
        for column in ("option", "type", "default", "description"):
            table.add_column(column, overflow="fold")
        for o in item["options"]:
            default = "(required)" if o["required"] else json.dumps(o["default"])
            doc = o["doc"]
            if o["choices"]:
                doc = f"{doc} [one of: {', '.join(map(str, o['choices']))}]".strip()
            table.add_row(*map(Text, (o["name"], o["type"], default, doc)))
        console.print(table)
    return 0
