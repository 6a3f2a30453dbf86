"""`mmtrain export CKPT OUT`: an inference bundle (weights + config JSON)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write an inference bundle from a checkpoint")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory or run directory")
    p.add_argument("out", type=Path, help="bundle directory to write")


def run(args: argparse.Namespace) -> int:
    from mmtrain.bundle import export_bundle, load

    out = export_bundle(args.checkpoint, args.out)
    model = load(out)
    count = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({count:,} parameters; load with mmtrain.load({str(out)!r}))")
    return 0
