"""`mmtrain data`: generate an embedded dataset (`make`) or look inside a source
(`inspect`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmtrain.errors import ConfigError
from mmtrain.schema import load_yaml


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="make embedded datasets and inspect data sources",
        description="Generate an embedded dataset as parquet shards, or inspect any source "
        "(embedded name, local parquet/arrow/jsonl files, or a Hub dataset).",
    )
    actions = p.add_subparsers(dest="action", required=True)

    make = actions.add_parser(
        "make",
        help="write an embedded dataset as parquet shards and a card.json",
        description="Write an embedded dataset as parquet shards and a card.json into DIR.",
    )
    make.add_argument("name", nargs="?", help="embedded dataset name (see --list)")
    make.add_argument("--out", type=Path, help="output directory")
    make.add_argument("--list", action="store_true", help="list the embedded datasets")
    make.add_argument("--seed", type=int)
    make.add_argument("--missing-rate", type=float, help="fraction of modality cells to drop")
    make.add_argument("--shards", type=int, help="parquet files per split")
    make.add_argument(
        "--mnist",
        metavar="NAME_OR_DIR",
        help="polymnist, mnist-svhn-text: MNIST as a Hub name (ylecun/mnist) or a local copy",
    )
    make.add_argument(
        "--svhn",
        metavar="NAME_OR_DIR",
        help="mnist-svhn-text: SVHN as a Hub name (ufldl-stanford/svhn) or a local copy",
    )
    make.add_argument(
        "--backgrounds",
        metavar="DIR",
        help="polymnist: one background image per modality (*.jpg/*.png, sorted by name)",
    )
    make.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a generator option, e.g. --option pairings=5 (YAML value)",
    )

    inspect = actions.add_parser(
        "inspect",
        help="schema, rows, modality presence, image grid and sample text of a source",
        description="Read the first rows of SOURCE through the training data path and report "
        "its schema, rows (where known), how often each column is present, sample text, and "
        "a PNG grid of its image columns.",
    )
    inspect.add_argument("source", help="embedded name, directory, file, glob or Hub name")
    inspect.add_argument("--split", default="train")
    inspect.add_argument("--rows", type=int, default=1000, help="rows to read (default 1000)")
    inspect.add_argument("--out", type=Path, help="where to write the PNG grid")
    inspect.add_argument("--missing-rate", type=float, help="embedded datasets only")


def run(args: argparse.Namespace) -> int:
    if args.action == "make":
        return _make(args)
    return _inspect(args)


def _make(args: argparse.Namespace) -> int:
    from mmtrain.data.embedded import embedded_names, get_embedded, make_embedded

    if args.list:
        for name in embedded_names():
            print(f"{name:18s} {get_embedded(name).description}")
        return 0
    if not args.name or args.out is None:
        raise ConfigError("data make needs NAME and --out DIR (or --list)")
    options = _options(args.option)
    if args.seed is not None:
        options["seed"] = args.seed
    if args.missing_rate is not None:
        options["missing_rate"] = args.missing_rate
    for name in ("mnist", "svhn", "backgrounds"):
        value = getattr(args, name)
        if value is not None:
            # A local path is recorded absolute in the card; a Hub name as given.
            local = Path(value).expanduser()
            options[name] = str(local.resolve()) if local.exists() else value
    card = make_embedded(args.name, args.out, options, shards=args.shards)
    rows = ", ".join(f"{split} {info['rows']}" for split, info in card["splits"].items())
    files = sum(len(info["files"]) for info in card["splits"].values())
    print(f"wrote {args.name} to {args.out}: {rows} rows in {files} parquet files")
    print(f"card: {args.out / 'card.json'}")
    print("modalities: " + json.dumps(card["modalities"]))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from mmtrain.data.inspect import inspect_source

    if args.rows < 1:
        raise ConfigError("--rows must be at least 1")
    extra = {} if args.missing_rate is None else {"missing_rate": args.missing_rate}
    found = inspect_source(args.source, args.split, args.rows, args.out, **extra)
    print(found.report())
    return 0


def _options(pairs: list[str]) -> dict[str, object]:
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = load_yaml(value)
    return options
