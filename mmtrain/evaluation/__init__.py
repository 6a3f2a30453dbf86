"""Evaluation of trained models: the paper's metrics per conditioning subset, pictures, a
markdown report (`evaluate_checkpoint`, `mmtrain eval`), and the tidy tables the results are
kept in (`mmtrain.evaluation.tables`). Grids of runs (`mmtrain compare`) train models and
live in `mmtrain.compare`.

    from mmtrain.evaluation import EvalOptions, evaluate_checkpoint

    results = evaluate_checkpoint("runs/digits", options=EvalOptions(is_samples=100))
    print(results["summary"])          # and runs/digits/eval/report.md

The names below are imported on first use, so that importing one submodule (the CLI does
while it builds its parser) does not load matplotlib and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModalityClassifier": "classifiers",
    "TrainedClassifier": "classifiers",
    "train_classifier": "classifiers",
    "coherence_by_size": "coherence",
    "cross_coherence": "coherence",
    "joint_coherence": "coherence",
    "joint_coherence_of": "coherence",
    "FrechetDistance": "fid",
    "fid_metrics": "fid",
    "LikelihoodTable": "likelihood",
    "log_likelihood_table": "likelihood",
    "subset_log_likelihood": "likelihood",
    "latent_classification": "probe",
    "posterior_means": "probe",
    "probe_accuracy": "probe",
    "EvalOptions": "runner",
    "evaluate_checkpoint": "runner",
    "evaluate_model": "runner",
    "Subset": "subsets",
    "evaluation_table": "tables",
    "headline_table": "tables",
    "seed_statistics": "tables",
    "enumerate_subsets": "subsets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
