"""`mmtrain export CKPT OUT [--push-to-hub ORG/NAME]`: an inference bundle (weights, config
JSON, model card), optionally uploaded to the Hugging Face Hub."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write an inference bundle from a checkpoint (and push it to the Hub)",
        description="Write an inference bundle: model.safetensors, config.json and a model "
        "card (README.md: config, plugins and versions, training summary, the run's "
        "evaluation with its pictures). With --push-to-hub, upload it to a model repository "
        'on the Hugging Face Hub, from where mmtrain.load("hf://ORG/NAME") opens it; the '
        "upload needs a network connection and a token with write access (`hf auth login` "
        "or HF_TOKEN).",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint directory or run directory")
    p.add_argument("out", type=Path, help="bundle directory to write")
    p.add_argument(
        "--eval",
        dest="eval_dir",
        type=Path,
        metavar="DIR",
        help="the `mmtrain eval` output to put in the card (default: RUN/eval when present)",
    )
    p.add_argument("--license", dest="license_id", help="license id for the card, e.g. mit")
    hub = p.add_argument_group("Hugging Face Hub")
    hub.add_argument(
        "--push-to-hub", metavar="ORG/NAME", help="upload the bundle to this model repository"
    )
    hub.add_argument("--private", action="store_true", help="create the repository private")
    hub.add_argument("--revision", metavar="BRANCH", help="branch to commit to (default: main)")
    hub.add_argument("--commit-message", metavar="TEXT", help="message of the upload commit")


def run(args: argparse.Namespace) -> int:
    from mmtrain.bundle import export_bundle, load
    from mmtrain.errors import ConfigError
    from mmtrain.hub import check_repo_id, push_bundle

    hub_options = [
        flag
        for flag, value in [
            ("--private", args.private),
            ("--revision", args.revision),
            ("--commit-message", args.commit_message),
        ]
        if value
    ]
    if hub_options and not args.push_to_hub:
        raise ConfigError(f"{', '.join(hub_options)} only apply with --push-to-hub ORG/NAME")
    repo_id = check_repo_id(args.push_to_hub) if args.push_to_hub else None
    out = export_bundle(
        args.checkpoint,
        args.out,
        repo_id=repo_id,
        license_id=args.license_id,
        eval_dir=args.eval_dir,
    )
    model = load(out)
    count = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({count:,} parameters; load with mmtrain.load({str(out)!r}))")
    if repo_id is not None:
        url = push_bundle(
            out,
            repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
        )
        revision = f"@{args.revision}" if args.revision else ""
        print(f"pushed to {url}; load with mmtrain.load('hf://{repo_id}{revision}')")
    return 0
