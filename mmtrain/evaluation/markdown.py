"""`report.md` of an evaluation: the headline table, the per-subset tables and the pictures,
with relative links so the folder can be moved or published as is."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mmtrain.evaluation.tables import WHOLE, from_records
from mmtrain.report import (
    eval_summary_rows,
    format_metric,
    format_number,
    markdown_table,
)

#: the mark of a figure that rests on a classifier below the trust threshold
UNTRUSTED = "⚠"

PICTURES = (
    (
        "cross_generation",
        "Cross-generation",
        "Row *given S*: decoder means of every modality from one draw z ~ q(z | x_S); the "
        "first row is the data. Blue frames are generated from other modalities, grey frames "
        "are reconstructions (the column's modality is in S). Column k of every strip is the "
        "same test example.",
    ),
    (
        "reconstructions",
        "Reconstructions",
        "Data, reconstructions from everything observed, and from the modality alone.",
    ),
    (
        "prior_samples",
        "Prior samples",
        "Decoder means of the same prior draws z ~ p(z) in every row (joint generation).",
    ),
    (
        "latent_projection",
        "Posterior means",
        "Means of q(z | x_S) on the first two principal axes of q(z | all), coloured by label.",
    ),
    (
        "training_curves",
        "Training curves",
        "From the run's metrics.jsonl: the training objective (masked objective: not a "
        "bound; mixture objective: a lower bound) and the ELBO, and on held-out data the "
        "same with the importance-sampled log-likelihood.",
    ),
)


def _accuracy(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.1f}%"


def summary_section(results: dict[str, Any]) -> str:
    untrusted = set(results.get("untrusted", ()))
    rows = [
        [label, format_metric(key, value) + (f" {UNTRUSTED}" if key in untrusted else "")]
        for key, label, value in eval_summary_rows(results["headline"])
    ]
    return markdown_table(["metric (per example)", "value"], rows)


def _untrusted_targets(results: dict[str, Any]) -> set[str]:
    verdicts = results.get("classifier_check", {}).get("classifiers", {})
    return {name for name, verdict in verdicts.items() if not verdict["trusted"]}


def subset_section(results: dict[str, Any]) -> str:
    """One row per subset S: rows, log p̂(x_S) (and the exact value), probe, MCC, coherence,
    a pivot of the tidy table (`results["table"]`)."""
    names = list(results["model"]["modalities"])
    table = from_records(results["table"])
    per_subset = table[table.subset != WHOLE].set_index(["subset", "target", "metric"])

    def get(subset: str, metric: str, column: str = "value", target: str = "") -> Any:
        at = (subset, target, metric)
        return per_subset.loc[at, column] if at in per_subset.index else None

    present = set(per_subset.index.get_level_values("metric"))
    coherence = {"coherence", "reconstruction_coherence"} & present
    headers = ["S", "rows", "log p̂(x_S)", "MC s.e."]
    extra = [
        (metric, label)
        for metric, label in (
            ("exact_ll", "exact log p(x_S)"),
            ("latent_probe", "latent probe"),
            ("mcc_strong_out", "MCC strong-out"),
        )
        if metric in present
    ]
    headers += [label for _, label in extra]
    if coherence:
        headers += [f"→ {name}" for name in names]
    untrusted = _untrusted_targets(results)
    rows = []
    for subset in results["subsets"]:
        rows_used = get(subset, "log_likelihood", "n")
        row: list[object] = [
            subset,
            0 if rows_used is None or rows_used != rows_used else int(rows_used),
            get(subset, "log_likelihood"),
            format_number(get(subset, "log_likelihood", "stderr"), 3),
        ]
        for metric, _ in extra:
            value = get(subset, metric)
            row.append(_accuracy(value) if metric == "latent_probe" else value)
        for name in names if coherence else ():
            cross = get(subset, "coherence", target=name)
            own = get(subset, "reconstruction_coherence", target=name)
            if cross is None and own is None:
                row.append("–")
                continue
            value = _accuracy(cross) if cross is not None else f"({_accuracy(own)})"
            row.append(f"{value} {UNTRUSTED}" if name in untrusted else value)
        rows.append(row)
    return markdown_table(headers, rows)


def conditional_section(results: dict[str, Any]) -> str:
    """log p̂(x_j | x_S): one row per conditioning subset, one column per target."""
    names = list(results["model"]["modalities"])
    table = from_records(results["table"])
    conditional = table[table.metric == "conditional_ll"]
    wide = conditional.pivot(index="subset", columns="target", values="value")
    wide = wide.reindex(index=list(dict.fromkeys(conditional.subset)), columns=names)
    rows = [
        [subset, *[None if v != v else float(v) for v in values]]
        for subset, values in zip(wide.index, wide.to_numpy())
    ]
    return markdown_table(["S \\ target j", *names], rows)


def classifier_section(results: dict[str, Any]) -> str:
    checked = results.get("classifier_check", {}).get("classifiers", {})
    rows = []
    for name, card in results.get("classifiers", {}).items():
        verdict = checked.get(name, {})
        trusted = verdict.get("trusted")
        rows.append(
            [
                name,
                card["arch"],
                card["train_examples"],
                card["test_examples"],
                _accuracy(card["test_accuracy"]),
                _accuracy(verdict.get("chance")),
                _accuracy(verdict.get("threshold")),
                "–" if trusted is None else ("yes" if trusted else f"no {UNTRUSTED}"),
            ]
        )
    headers = [
        "modality",
        "network",
        "train rows",
        "test rows",
        "test accuracy",
        "chance",
        "threshold",
        "trusted",
    ]
    return markdown_table(headers, rows, ["l", "l", "r", "r", "r", "r", "r", "l"])


def render_report(results: dict[str, Any]) -> str:
    """The markdown text of `report.md`."""
    lines = _intro_lines(results) + _notes_lines(results) + _metric_sections(results)
    lines += _coherence_by_size_lines(results) + _fid_lines(results)
    lines += _classifier_lines(results) + _mcc_lines(results)
    lines += _picture_lines(results) + _time_lines(results)
    return "\n".join(lines)


def describe_best(best: dict[str, Any]) -> str:
    """`step 12, eval/is_ll = -6.55 (max)`: why a run's best checkpoint is the best."""
    return f"step {best['step']}, {best['metric']} = {best['value']:.6g} ({best['mode']})"


def _intro_lines(results: dict[str, Any]) -> list[str]:
    model, data = results["model"], results["data"]
    step, best = results.get("step"), results.get("best")
    chosen = (
        f" (the run's best checkpoint: {describe_best(best)})"
        if best
        else (f" (step {step})" if step is not None else "")
    )
    return [
        f"# Evaluation: {model['aggregator']} + {model['objective']}",
        "",
        f"Checkpoint `{results['checkpoint']}`"
        + chosen
        + f"; data `{data['source']}`, {data['rows']} rows; {data['note']}. "
        f"Latent size {model['latent_dim']}; modalities "
        + ", ".join(f"`{n}` {tuple(s)}" for n, s in model["modalities"].items())
        + f". Log-likelihoods use {results['log_likelihood']['num_samples']} importance "
        "samples per example (nats per example); *MC s.e.* is the Monte-Carlo standard error "
        "of their mean (delta method), *stderr* in metrics.json the spread over rows."
        + (f" {model['options_line']}." if model.get("options_line") else ""),
        "",
    ]


def _notes_lines(results: dict[str, Any]) -> list[str]:
    """The data's note, warnings, the untrusted marker's meaning, the top picture."""
    lines: list[str] = []
    data = results["data"]
    if data.get("warning"):
        lines += [f"> **Note:** {data['warning']}.", ""]
    for warning in results.get("warnings", []):
        lines += [f"> **Warning:** {warning}.", ""]
    if results.get("untrusted"):
        lines += [f"Figures marked {UNTRUSTED} rest on a classifier below the threshold.", ""]
    pictures = results.get("pictures", {})
    if "cross_generation" in pictures:
        lines += [f"![cross-generation]({pictures['cross_generation']})", ""]
    return lines


def _metric_sections(results: dict[str, Any]) -> list[str]:
    return [
        "## Summary",
        "",
        summary_section(results),
        "",
        "## Per conditioning subset S",
        "",
        "Each row uses the test rows that observe every modality of S. *log p̂(x_S)*: "
        "importance-sampled with proposal q(z | x_S). *latent probe*: logistic regression on "
        "the means of q(z | x_S). *→ j*: coherence, the share of decoded x_j that the "
        "modality's classifier assigns the true label (in parentheses when j ∈ S: "
        "reconstruction).",
        "",
        subset_section(results),
        "",
        "## Conditional log-likelihoods log p̂(x_j | x_S)",
        "",
        "log p̂(x_{S∪j}) − log p̂(x_S), each with its own proposal, over the rows observing "
        "S ∪ {j}; the ∅ row is the marginal log p̂(x_j).",
        "",
        conditional_section(results),
        "",
    ]


def coherence_by_size_section(results: dict[str, Any]) -> str:
    """One row per number k of given modalities (k = 0: joint coherence of prior draws)."""
    by_size = results["coherence_by_size"]
    mark = f" {UNTRUSTED}" if results.get("untrusted") else ""
    total = len(results["model"]["modalities"])
    rows: list[list[object]] = []
    joint = by_size.get("joint_coherence")
    if joint is not None:
        rows.append(["0 (prior: joint coherence)", "–", "–", _accuracy(joint) + mark])
    for entry in by_size["sizes"]:
        k = entry["given"]
        subsets = f"{entry['subsets']} of {math.comb(total, k)}"
        rows.append([k, subsets, entry["pairs"], _accuracy(entry["coherence"]) + mark])
    return markdown_table(
        ["given modalities k", "subsets S", "pairs (S, j ∉ S)", "coherence"],
        rows,
        ["l", "r", "r", "r"],
    )


def _coherence_by_size_lines(results: dict[str, Any]) -> list[str]:
    by_size = results.get("coherence_by_size")
    if not by_size or not by_size["sizes"]:
        return []
    sampled = [k for k, complete in by_size["all_subsets"].items() if not complete]
    if sampled:
        how = (
            f"For k = {', '.join(sampled)} there are more than {by_size['per_size']} subsets: "
            f"{by_size['per_size']} of them were drawn at random (seed {by_size['seed']}; "
            "`--coherence-subsets-per-size`); every subset of the other sizes is used."
        )
    else:
        how = "Every subset of each size is used."
    lines = [
        "## Coherence by number of given modalities",
        "",
        "Row k: the mean of coherence(S → j) over the subsets S of k modalities and the "
        "targets j ∉ S, every pair (S, j) weighted alike (as MoPoE and MMVAE+ report it for "
        "PolyMNIST); row 0: joint coherence, the share of prior draws whose decoded "
        f"modalities all get the same predicted label. {how}",
        "",
        coherence_by_size_section(results),
        "",
    ]
    picture = results.get("pictures", {}).get("coherence_by_size")
    if picture:
        lines += [f"![coherence by number of given modalities]({picture})", ""]
    return lines


def fid_section(results: dict[str, Any]) -> str:
    """FID: one row per conditioning subset S (∅: the prior), one column per image
    modality j (– where j ∈ S)."""
    targets = results["fid"]["modalities"]
    subsets = [s for s in results["subsets"] if any(s in t["from"] for t in targets.values())]
    rows = []
    for subset in [*subsets, "∅"]:
        row: list[object] = ["∅ (prior)" if subset == "∅" else subset]
        for target in targets.values():
            entry = target["from"].get(subset)
            row.append(None if entry is None else entry["fid"])
            row.append("–" if entry is None else entry["rows"])
        rows.append(row)
    headers = ["S \\ generated j"]
    for name in targets:
        headers += [f"FID {name}", "images"]
    return markdown_table(headers, rows, digits=2)


def _fid_lines(results: dict[str, Any]) -> list[str]:
    fid = results.get("fid")
    if not fid or not fid["modalities"]:
        return []
    real = ", ".join(f"{n}: {t['real_rows']}" for n, t in fid["modalities"].items())
    comparable = (
        "These are not Inception FIDs: they compare models evaluated with the same "
        "classifiers, not published figures."
        if fid["features"] == "classifier"
        else "Images are made 3-channel and resized to 299 × 299 (`mmtrain.evaluation.fid`); "
        "with torch-fidelity's weights these are the standard FID features."
    )
    return [
        "## FID per image modality",
        "",
        f"Fréchet distance between the test images of j ({real} images) and decoder means "
        f"of j generated from one draw z ~ q(z | x_S) per test row observing S, or from "
        f"{fid['samples']} prior draws (∅); at most {fid['samples']} images per set "
        "(`--fid-samples`; FID grows as sets shrink, so compare equal sizes). Features: "
        f"{fid['note']}. {comparable} Lower is better.",
        "",
        fid_section(results),
        "",
    ]


def _classifier_lines(results: dict[str, Any]) -> list[str]:
    if not results.get("classifiers"):
        return []
    return [
        "## Classifiers",
        "",
        "Trained by mmtrain on the labelled training rows; coherence is only as good as "
        "their own test accuracy. *chance*: always guessing the most frequent label; a "
        "classifier below *threshold* ("
        + results.get("classifier_check", {}).get("rule", "see metrics.json")
        + ") "
        f"makes its coherence figures untrusted ({UNTRUSTED}).",
        "",
        classifier_section(results),
        "",
    ]


def _mcc_lines(results: dict[str, Any]) -> list[str]:
    mcc = results.get("mcc", {}).get("observed")
    if not mcc:
        return []
    return [
        "## MCC (each row's observed modalities, one posterior sample)",
        "",
        markdown_table(
            ["weak-in", "weak-out", "strong-in", "strong-out"],
            [[mcc["weak_in"], mcc["weak_out"], mcc["strong_in"], mcc["strong_out"]]],
            digits=3,
        ),
        "",
    ]


def _picture_lines(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    pictures = results.get("pictures", {})
    shown = [p for p in PICTURES if p[0] in pictures and p[0] != "cross_generation"]
    if shown:
        lines += ["## Pictures", ""]
        for key, title, caption in shown:
            lines += [f"### {title}", "", caption, "", f"![{title.lower()}]({pictures[key]})", ""]
    if "cross_generation" in pictures:
        lines += [
            "The picture at the top: " + PICTURES[0][2],
            "",
        ]
    return lines


def _time_lines(results: dict[str, Any]) -> list[str]:
    seconds = results.get("seconds", {})
    if not seconds:
        return []
    spent = ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in seconds.items())
    return [
        f"<sub>Time: {spent}. All numbers: `metrics.json`; the per-subset ones as a table: `metrics.csv`.</sub>",
        "",
    ]


def write_report(results: dict[str, Any], out: Path) -> Path:
    path = out / "report.md"
    path.write_text(render_report(results))
    return path
