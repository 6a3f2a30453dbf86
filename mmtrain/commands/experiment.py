"""`mmtrain experiment`: the paper's simulated experiments."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from mmtrain.commands import EXPERIMENT_NAMES as EXPERIMENTS

    p = sub.add_parser(
        "experiment",
        help="train and evaluate one of the paper's simulated experiments",
        description="Train a model on one of the paper's simulated experiments (paper §5) with "
        "the training loop, on the config configs/paper/NAME.yaml, and report its exact and "
        "importance-sampled log-likelihoods, the training objective, the ELBO and MCC.",
    )
    p.add_argument("name", choices=EXPERIMENTS, metavar="{" + ",".join(EXPERIMENTS) + "}")
    p.add_argument("--aggregator", help="aggregator name (default: the script's)")
    p.add_argument("--objective", help="masked (default) or mixture")
    p.add_argument(
        "--steps",
        type=int,
        default=2000,
        help="training steps (default 2000; the paper's scripts run 40000 to 80000, the "
        "configs' train.steps)",
    )
    p.add_argument("--modalities", type=int, help="number of modalities (linear-gaussian)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--components", type=int, help="prior/posterior mixture components K")
    p.add_argument("--is-samples", type=int, help="importance samples for is_ll")
    p.add_argument("--samples", type=int, help="importance samples L during training")
    p.add_argument("--beta", type=float)
    p.add_argument("--subset-mode", choices=["faithful", "uniform-size"])
    p.add_argument("--gradient-mode", choices=["elementwise", "norm", "none"])
    p.add_argument("--poe-reference-bug", action="store_true", help="reproduce the PoE bug")
    p.add_argument("--clean-data", action="store_true", help="shuffle the multimodal split")
    p.add_argument("--num-examples", type=int, help="override the data size")
    p.add_argument("--kernels", choices=["torch", "triton", "auto"], help="kernel backend")
    p.add_argument(
        "--compile",
        action="store_true",
        help="run the training step under torch.compile (train.compile; Inductor, "
        "reduce-overhead on CUDA)",
    )
    p.add_argument(
        "--init",
        choices=["flax", "torch"],
        help="network initialisation: flax (default; LeCun normal, zero biases, as the "
        "paper's code) or torch (PyTorch's layer defaults)",
    )
    p.add_argument(
        "--output-dir",
        help="run directory (default runs/experiment/NAME/AGGREGATOR-OBJECTIVE-seedS; a "
        "previous run there is moved aside)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, after the flags (repeatable)",
    )
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mmtrain.paper import ExperimentOptions, experiment_config, run_experiment
    from mmtrain.progress import interactive
    from mmtrain.report import experiment_table, linear_gaussian_verdict

    options = ExperimentOptions(
        aggregator=args.aggregator,
        objective=args.objective,
        steps=args.steps,
        modalities=args.modalities,
        batch_size=args.batch_size,
        seed=args.seed,
        lr=args.lr,
        components=args.components,
        is_samples=args.is_samples,
        samples=args.samples,
        beta=args.beta,
        subset_mode=args.subset_mode,
        gradient_mode=args.gradient_mode,
        poe_reference_bug=args.poe_reference_bug or None,
        clean_data=args.clean_data or None,
        num_examples=args.num_examples,
        kernels=args.kernels,
        compile=args.compile or None,
        init=args.init,
        output_dir=args.output_dir,
    )
    config = experiment_config(args.name, options, args.set)
    # The bar only on a terminal: piped output would hold every redraw.
    results = run_experiment(args.name, config, progress=not args.quiet and interactive())
    experiment_table(results)
    verdict = linear_gaussian_verdict(results)
    if verdict is not None:
        print(verdict)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"results written to {args.json}")
    return 0
