"""`mmtrain eval CKPT [--data SOURCE] [--out DIR]`: the paper's metrics for a trained model
per conditioning subset, coherence by the number of given modalities, FID of the image
modalities, pictures, `metrics.json` and `report.md`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a trained model: log-likelihoods, coherence, latent probe, pictures",
        description="Evaluate a checkpoint, run directory or exported bundle. For every "
        "conditioning subset S: importance-sampled log p(x_S) and log p(x_j | x_S), "
        "cross-generation coherence (with classifiers mmtrain trains on the labelled "
        "training split), latent classification; joint coherence and the mean coherence by "
        "the number of given modalities; FID of each image modality generated from each S "
        "without it and from the prior; exact log-likelihood "
        "(linear Gaussian models) and MCC (data with true sources). Writes metrics.json, "
        "report.md and PNG pictures to --out (default RUN/eval).",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint, run directory or bundle")
    p.add_argument(
        "--data", metavar="SOURCE", help="evaluate on another source with the same columns"
    )
    p.add_argument("--out", type=Path, help="output directory (default: RUN/eval)")
    p.add_argument("--is-samples", type=int, default=100, help="importance samples per example")
    p.add_argument("--max-examples", type=int, default=1000, help="test rows (0: all)")
    p.add_argument(
        "--max-train-examples",
        type=int,
        default=10000,
        help="labelled training rows for the classifiers and the probe (0: all)",
    )
    p.add_argument("--batch-size", type=int, default=250, help="rows per batch")
    p.add_argument("--chunk-size", type=int, default=50, help="importance samples decoded at once")
    p.add_argument("--probe-examples", type=int, default=500, help="training rows of the probe")
    p.add_argument("--classifier-epochs", type=int, default=5)
    p.add_argument("--classifiers", type=Path, help="classifier cache (default: OUT/classifiers)")
    p.add_argument("--joint-samples", type=int, default=1000, help="prior draws, joint coherence")
    p.add_argument(
        "--max-subset-modalities",
        type=int,
        default=4,
        help="all subsets up to this many modalities; beyond, singletons, leave-one-out, all",
    )
    p.add_argument(
        "--coherence-subsets-per-size",
        type=int,
        default=10,
        metavar="N",
        help="coherence by number k of given modalities: every subset of size k when there "
        "are at most N, else N drawn at random (seeded; default 10: all of them for M ≤ 5)",
    )
    p.add_argument(
        "--fid-features",
        choices=("auto", "inception", "classifier", "none"),
        default="auto",
        help="features for the FID of image modalities: Inception-v3 pool features (needs "
        "torch-fidelity: pip install 'mmtrain[inception]'), the penultimate layer of "
        "mmtrain's own classifier (offline), auto (inception when torch-fidelity imports, "
        "a GPU is there and the weights load, else classifier; default) or none",
    )
    p.add_argument(
        "--fid-weights",
        type=Path,
        metavar="PATH",
        help="Inception-v3 FID weights (torch-fidelity's .pth, read with torch.load: use a "
        "file you trust); default: torch-fidelity downloads them",
    )
    p.add_argument(
        "--fid-samples",
        type=int,
        default=1000,
        metavar="N",
        help="images per FID set: test images, generated from each S, prior draws",
    )
    p.add_argument(
        "--min-classifier-accuracy",
        type=float,
        metavar="P",
        help="flag coherence figures whose classifier's test accuracy is below P (0-1) as "
        "untrusted; default: halfway from chance (the most frequent label's share) to 1",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-pictures", action="store_true", help="metrics and report only")
    p.add_argument("--json", type=Path, help="also write metrics.json here")


def run(args: argparse.Namespace) -> int:
    from mmtrain.evaluation.runner import EvalOptions, evaluate_checkpoint
    from mmtrain.report import eval_table

    options = EvalOptions(
        is_samples=args.is_samples,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        max_examples=args.max_examples or None,
        max_train_examples=args.max_train_examples or None,
        probe_examples=args.probe_examples,
        max_subset_modalities=args.max_subset_modalities,
        classifier_epochs=args.classifier_epochs,
        classifier_dir=args.classifiers,
        joint_samples=args.joint_samples,
        coherence_subsets_per_size=args.coherence_subsets_per_size,
        fid_features=args.fid_features,
        fid_weights=args.fid_weights,
        fid_samples=args.fid_samples,
        min_classifier_accuracy=args.min_classifier_accuracy,
        seed=args.seed,
        pictures=not args.no_pictures,
    )
    results = evaluate_checkpoint(args.checkpoint, args.out, args.data, options)
    eval_table(results)
    out = Path(results["out"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text((out / "metrics.json").read_text())
    summary = {"report": str(out / "report.md"), "metrics": str(out / "metrics.json")}
    summary["checkpoint"] = results.get("checkpoint")
    if results.get("best"):
        summary["best"] = results["best"]  # the run's best checkpoint: step, metric, value
    print(json.dumps(summary))
    return 0
