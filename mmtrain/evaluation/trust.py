"""Coherence is only as good as the classifiers that score it: a figure whose classifier
barely beats guessing says nothing about the model. Each classifier's test accuracy is
compared with a threshold, and every coherence figure that rests on a classifier below it
is flagged in metrics.json, report.md and the terminal.

Chance is the accuracy of always guessing the most frequent label of the classifier's test
rows. The default threshold is halfway from chance to perfect, (1 + chance) / 2: 55 % for
ten balanced classes, 60 % for five, 75 % for two. `EvalOptions.min_classifier_accuracy`
(`mmtrain eval --min-classifier-accuracy`) replaces it with a fixed value.
"""

from __future__ import annotations

from typing import Any

import torch

#: how the default threshold is chosen, as metrics.json records it
DEFAULT_RULE = "halfway from chance to perfect: (1 + chance) / 2"


def chance_accuracy(labels: torch.Tensor) -> float:
    """The accuracy of always guessing the most frequent of `labels` (NaN when empty)."""
    if labels.numel() == 0:
        return float("nan")
    return float(torch.bincount(labels.long()).max()) / labels.numel()


def accuracy_threshold(chance: float, minimum: float | None = None) -> float:
    """The test accuracy below which a classifier's coherence figures are not trusted."""
    return float(minimum) if minimum is not None else (1.0 + chance) / 2.0


def check_classifiers(
    accuracies: dict[str, float], test_labels: dict[str, torch.Tensor], minimum: float | None
) -> dict[str, Any]:
    """Per modality: test accuracy, chance, threshold, and whether it is `trusted`."""
    checked = {}
    for name, accuracy in accuracies.items():
        chance = chance_accuracy(test_labels[name])
        threshold = accuracy_threshold(chance, minimum)
        checked[name] = {
            "test_accuracy": accuracy,
            "chance": chance,
            "threshold": threshold,
            "trusted": bool(accuracy >= threshold),
        }
    rule = DEFAULT_RULE if minimum is None else f"fixed: {minimum}"
    return {"rule": rule, "classifiers": checked}


def flag_untrusted(results: dict[str, Any]) -> list[str]:
    """Mark the coherence figures of `results` that rest on an untrusted classifier:
    `coherence[S][j]["trusted"]`, `results["untrusted"]` (the summary keys concerned) and
    one warning per such classifier in `results["warnings"]`. Returns the new warnings."""
    check = results.get("classifier_check")
    if not check:
        return []
    verdicts = check["classifiers"]
    untrusted = [name for name, v in verdicts.items() if not v["trusted"]]
    for row in results.get("coherence", {}).values():
        for name, entry in row.items():
            entry["trusted"] = name not in untrusted
    warnings = []
    for name in untrusted:
        v = verdicts[name]
        warnings.append(
            f"coherence → {name} cannot be trusted: the classifier of {name} has test "
            f"accuracy {100 * v['test_accuracy']:.1f}%, below the threshold "
            f"{100 * v['threshold']:.1f}% (chance {100 * v['chance']:.1f}%)"
        )
    keys = [f"coherence/{name}" for name in untrusted]
    if untrusted:
        keys += ["cross_coherence", "joint_coherence"]
        keys += [
            f"coherence_given/{e['given']}"
            for e in results.get("coherence_by_size", {}).get("sizes", [])
        ]
        warnings.append(
            "joint coherence and the mean cross-generation coherence use these classifiers "
            "and cannot be trusted either"
        )
    results["untrusted"] = keys
    results.setdefault("warnings", []).extend(warnings)
    return warnings
