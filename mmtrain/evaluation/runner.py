"""`evaluate_checkpoint`: every metric of the paper for one trained model, its pictures,
`metrics.json` and `report.md`.

    model + config (checkpoint or bundle)
      → test rows (the held-out split; the training split when there is none) and
        labelled training rows (for the classifiers and the latent probe)
      → per subset S: log p̂(x_S), log p̂(x_j | x_S), coherence S → j, latent probe, MCC
      → joint coherence, coherence by the number of given modalities, exact
        linear-Gaussian log-likelihoods
      → per image modality j: FID of j generated from each S ∌ j and from the prior
      → one tidy table of the per-subset numbers and the headline numbers derived from it
        (`mmtrain.evaluation.tables`)
      → pictures, metrics.json, metrics.csv (the tidy table), report.md
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmtrain.batch import Batch
from mmtrain.config import TrainConfig, config_from_dict
from mmtrain.errors import ConfigError, DataError
from mmtrain.evaluation import pictures
from mmtrain.evaluation.classifiers import (
    TrainedClassifier,
    classifiers_for,
    modality_is_categorical,
)
from mmtrain.evaluation.coherence import (
    coherence_by_size,
    conditional_generator,
    cross_coherence,
    joint_coherence,
)
from mmtrain.evaluation.data import (
    SplitData,
    class_labels,
    eval_data_config,
    load_split,
    split_exists,
)
from mmtrain.evaluation.fid import (
    FEATURES,
    choose_features,
    fid_metrics,
    fid_unavailable,
    image_modalities,
    value_range,
)
from mmtrain.evaluation.likelihood import log_likelihood_table
from mmtrain.evaluation.markdown import describe_best, write_report
from mmtrain.evaluation.probe import latent_classification
from mmtrain.evaluation.simulated import (
    exact_linear_metrics,
    exact_subset_log_likelihood,
    is_linear_gaussian,
    mcc_metrics,
)
from mmtrain.evaluation.subsets import Subset, enumerate_subsets
from mmtrain.evaluation.tables import (
    evaluation_table,
    from_records,
    headline_table,
    records,
    summary_dict,
)
from mmtrain.evaluation.trust import check_classifiers, flag_untrusted
from mmtrain.model import MultiModalVAE
from mmtrain.objectives import combined_stderr, importance_sampling

Log = Callable[[str], None]
logger = logging.getLogger(__name__)


def _stderr(message: str) -> None:
    logger.info(message)


@dataclass
class EvalOptions:
    """What an evaluation computes and how much of the data it reads."""

    #: importance samples L per example for every log-likelihood
    is_samples: int = 100
    #: samples decoded at once (memory: batch_size × chunk_size decoder outputs)
    chunk_size: int = 50
    #: rows per batch
    batch_size: int = 250
    #: test rows read (None: all)
    max_examples: int | None = 1000
    #: labelled training rows read for the classifiers and the probe (None: all)
    max_train_examples: int | None = 10000
    #: training rows the latent probe is fitted on (MoPoE: 500)
    probe_examples: int = 500
    #: all non-empty subsets up to this many modalities; beyond, singletons,
    #: leave-one-out sets and the full set
    max_subset_modalities: int = 4
    #: epochs of classifier training
    classifier_epochs: int = 5
    #: where classifiers are cached (default: OUT/classifiers)
    classifier_dir: Path | None = None
    #: prior draws for joint coherence
    joint_samples: int = 1000
    #: coherence by the number k of given modalities: every subset of size k when there are
    #: at most this many, else this many drawn at random (seeded)
    coherence_subsets_per_size: int = 10
    #: FID features of the image modalities: auto, inception, classifier or none
    #: (`mmtrain.evaluation.fid`)
    fid_features: str = "auto"
    #: Inception-v3 weights file for `fid_features` inception/auto (None: download)
    fid_weights: Path | None = None
    #: images per FID set: real test images, generated from each S, prior draws
    fid_samples: int = 1000
    #: seed of every random draw of the evaluation
    seed: int = 0
    #: coherence figures whose classifier's test accuracy is below this are flagged as
    #: untrusted (None: halfway from chance to perfect, `mmtrain.evaluation.trust`)
    min_classifier_accuracy: float | None = None
    #: draw the pictures
    pictures: bool = True
    #: examples per strip in the pictures
    picture_examples: int = 8

    def validate(self) -> EvalOptions:
        for name in (
            "is_samples",
            "chunk_size",
            "batch_size",
            "probe_examples",
            "joint_samples",
            "coherence_subsets_per_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1")
        for name in ("max_examples", "max_train_examples"):
            value = getattr(self, name)
            if value is not None and value < 4:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 4 (or unset)")
        if self.classifier_epochs < 1 or self.max_subset_modalities < 1:
            raise ConfigError("classifier-epochs and max-subset-modalities must be at least 1")
        if self.fid_features not in FEATURES:
            raise ConfigError(f"fid-features must be one of {FEATURES}, got {self.fid_features!r}")
        if self.fid_samples < 2:
            raise ConfigError("fid-samples must be at least 2")
        if self.fid_weights is not None and not Path(self.fid_weights).is_file():
            raise ConfigError(f"fid-weights {self.fid_weights}: no such file")
        minimum = self.min_classifier_accuracy
        if minimum is not None and not 0.0 <= minimum <= 1.0:
            raise ConfigError(f"min-classifier-accuracy must be in [0, 1], got {minimum}")
        return self

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        for name in ("classifier_dir", "fid_weights"):
            values[name] = None if values[name] is None else str(values[name])
        return values


@dataclass
class LoadedModel:
    """A model with the config it was trained with and where it came from."""

    model: MultiModalVAE
    config: TrainConfig
    path: Path
    step: int | None
    run_dir: Path | None
    extra: dict[str, Any] = field(default_factory=dict)


def load_for_eval(path: str | Path) -> LoadedModel:
    """A bundle, a checkpoint or a run directory, found by `mmtrain.bundle.resolve_model`
    (the resolver `mmtrain.load` and `mmtrain export` use too)."""
    from mmtrain.bundle import build_and_load, resolve_model

    source = resolve_model(path)
    model = build_and_load(source)
    config = config_from_dict(source.description["config"])
    where = source.path if source.is_bundle else source.checkpoint
    loaded = LoadedModel(model, config, where, source.step, source.run_dir)
    if source.description.get("best"):
        loaded.extra["best"] = source.description["best"]  # a run's checkpoints/best
    return loaded


def default_output(loaded: LoadedModel) -> Path:
    """`RUN/eval` for a run's checkpoint, `PATH/eval` for a bundle or loose checkpoint."""
    return (loaded.run_dir or loaded.path) / "eval"


@dataclass
class EvalData:
    """Rows to score (`test`) and labelled rows to fit classifiers and probes on (`fit`)."""

    test: SplitData
    fit: SplitData | None
    note: str


def read_eval_data(config: TrainConfig, options: EvalOptions, source: str | None) -> EvalData:
    """The held-out split when the dataset has one; otherwise the training split, with the
    classifiers and the probe fitted on rows disjoint from the scored ones."""
    data = eval_data_config(config.data, source)
    train_split = data.split
    test_split = config.train.eval_split or "test"
    seed = options.seed
    if test_split != train_split and split_exists(data, test_split):
        test = load_split(data, test_split, options.max_examples, seed)
        fit = None
        if class_labels(test.batch) is not None:
            fit = load_split(data, train_split, options.max_train_examples, seed)
        note = f"scored on split {test_split!r}; classifiers and probe fitted on {train_split!r}"
        return EvalData(test, fit, note)
    wanted = None
    if options.max_examples is not None and options.max_train_examples is not None:
        wanted = options.max_examples + options.max_train_examples
    rows = load_split(data, train_split, wanted, seed)
    if class_labels(rows.batch) is None:
        if options.max_examples is not None and rows.size > options.max_examples:
            rows.batch = rows.batch.take(torch.arange(options.max_examples))
        return EvalData(
            rows, None, f"scored on split {train_split!r} (the dataset has no test split)"
        )
    cut = min(options.max_examples or rows.size // 2, rows.size // 2)
    test = SplitData(train_split, rows.batch.take(torch.arange(cut)), rows.total_rows)
    fit = SplitData(train_split, rows.batch.take(torch.arange(cut, rows.size)), rows.total_rows)
    note = (
        f"scored on {cut} rows of split {train_split!r} (the dataset has no test split); "
        f"classifiers and probe fitted on {fit.size} other rows of it"
    )
    return EvalData(test, fit, note)


def _check_modalities(model: MultiModalVAE, batch: Batch) -> None:
    missing = [name for name in model.modality_names if name not in batch.x]
    if missing:
        raise DataError(
            f"the evaluation data lack the model's modalities {missing}; it has {sorted(batch.x)}"
        )
    for name in model.modality_names:
        want = tuple(model.modalities[name].event_shape)
        have = tuple(batch.x[name].shape[1:])
        if want != have:
            raise DataError(f"modality {name!r}: the model expects {want}, the data hold {have}")


def _labelled(split: SplitData, index: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    labels = class_labels(split.batch)
    assert labels is not None
    rows = split.batch.avail[:, index].bool() & (labels >= 0)
    return split.batch.x[name][rows], labels[rows]


class _Stages:
    """Runs the evaluation's stages in turn: logs each one's message and times it."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, message: str, compute: Callable[[], None]) -> None:
        self.log(message)
        started = time.perf_counter()
        compute()
        self.timings[name] = time.perf_counter() - started


def evaluate_model(
    loaded: LoadedModel,
    data: EvalData,
    out: Path,
    options: EvalOptions,
    log: Log = _stderr,
) -> dict[str, Any]:
    """Compute every metric that applies to the model and the data; write `metrics.json`,
    `report.md` and the pictures to `out`; return the results."""
    options.validate()
    model = loaded.model.eval()
    test = data.test.batch
    _check_modalities(model, test)
    fid_problem = fid_unavailable(options.fid_features) if image_modalities(model) else None
    if fid_problem is not None and options.fid_features != "auto":
        raise ConfigError(f"--fid-features {options.fid_features}: {fid_problem}")
    out.mkdir(parents=True, exist_ok=True)
    names = list(model.modality_names)
    subsets = enumerate_subsets(names, options.max_subset_modalities)
    full = subsets[-1] if subsets[-1].size == len(names) else None
    torch.manual_seed(options.seed)
    results = _results_header(loaded, data, out, options, subsets)
    if fid_problem is not None:
        results.setdefault("warnings", []).append(f"no FID: {fid_problem}")
        log(f"warning: no FID: {fid_problem}")
    stage = _Stages(log)
    _likelihood_stages(stage, results, model, test, subsets, options)
    labels = class_labels(test)
    fit_labels = None if data.fit is None else class_labels(data.fit.batch)
    classifiers: dict[str, TrainedClassifier] = {}
    if labels is not None and data.fit is not None and fit_labels is not None:
        classifiers = _labelled_stages(
            stage, results, model, data.fit, data.test, labels, fit_labels, subsets, out, options
        )
    if fid_problem is None:
        _fid_stage(stage, results, model, test, subsets, classifiers, options)
    results["summary"] = summarize(results, subsets, full)
    for warning in flag_untrusted(results):
        log(f"warning: {warning}")
    if options.pictures:
        stage(
            "pictures",
            "pictures",
            lambda: results.update(
                pictures=draw_pictures(
                    loaded, test, subsets, out, options, results.get("coherence_by_size")
                )
            ),
        )
    results["seconds"] = stage.timings
    (out / "metrics.json").write_text(json.dumps(_finite(results), indent=1))
    from_records(results["table"]).to_csv(out / "metrics.csv", index=False)
    write_report(results, out)
    return results


def _results_header(
    loaded: LoadedModel, data: EvalData, out: Path, options: EvalOptions, subsets: list[Subset]
) -> dict[str, Any]:
    """The results before any metric: what was evaluated, on which data, with which options."""
    model = loaded.model
    names = list(model.modality_names)
    test = data.test.batch
    return {
        "format": "mmtrain-eval/1",
        "checkpoint": str(loaded.path),
        "step": loaded.step,
        "best": loaded.extra.get("best"),
        "run_dir": None if loaded.run_dir is None else str(loaded.run_dir),
        "model": {
            "aggregator": loaded.config.model.aggregator,
            "objective": loaded.config.model.objective,
            "latent_dim": model.latent_dim,
            "modalities": {n: list(model.modalities[n].event_shape) for n in names},
            "prior": loaded.config.model.prior.kind,
            "options_line": type(model.aggregator).describe_options(
                dict(loaded.config.model.aggregator_options)
            ),
        },
        "data": {
            "source": loaded.extra.get("source", loaded.config.data.source),
            "split": data.test.name,
            "rows": test.size,
            "split_rows": data.test.total_rows,
            "observed_fraction": {
                n: float(test.avail[:, i].float().mean()) for i, n in enumerate(names)
            },
            "note": data.note,
        },
        "options": options.to_dict(),
        "out": str(out),
        "subsets": [s.name for s in subsets],
    }


def _likelihood_stages(
    stage: _Stages,
    results: dict[str, Any],
    model: MultiModalVAE,
    test: Batch,
    subsets: list[Subset],
    options: EvalOptions,
) -> None:
    """Importance-sampled log-likelihoods, and the exact ones and the MCC where the data were
    simulated."""
    stage(
        "log_likelihood",
        f"log-likelihoods: {len(subsets)} subsets × {test.size} rows × "
        f"{options.is_samples} importance samples",
        lambda: results.update(log_likelihood=likelihood_metrics(model, test, subsets, options)),
    )
    if is_linear_gaussian(model):
        stage(
            "exact",
            "exact log-likelihoods of the linear Gaussian model",
            lambda: results.update(exact_metrics(model, test, subsets)),
        )
    if "sources" in test.extras:
        stage(
            "mcc",
            "MCC against the true sources",
            lambda: results.update(mcc=mcc_metrics(model, test, subsets, options.seed)),
        )


def _labelled_stages(
    stage: _Stages,
    results: dict[str, Any],
    model: MultiModalVAE,
    fit: SplitData,
    scored: SplitData,
    labels: torch.Tensor,
    fit_labels: torch.Tensor,
    subsets: list[Subset],
    out: Path,
    options: EvalOptions,
) -> dict[str, TrainedClassifier]:
    """Classifiers, coherence and the latent probe: the stages that need class labels.
    Returns the classifiers."""
    test = scored.batch
    names = list(model.modality_names)
    warning = _unseen_labels_warning(labels, fit_labels)
    if warning:
        results["data"]["warning"] = warning
    classifiers: dict[str, TrainedClassifier] = {}
    cache = options.classifier_dir or out / "classifiers"

    def train_or_load() -> None:
        classifiers.update(_classifiers(model, fit, scored, cache, options, stage.log))
        results["classifiers"] = {n: asdict(c.card) for n, c in classifiers.items()}

    def coherence() -> None:
        torch.manual_seed(options.seed + 1)
        generate = conditional_generator(model)
        results["coherence"] = cross_coherence(
            test, labels, subsets, classifiers, generate, options.batch_size
        )
        results["joint_coherence"] = joint_coherence(
            model, classifiers, options.joint_samples, options.batch_size
        )
        by_size = coherence_by_size(
            test,
            labels,
            names,
            classifiers,
            generate,
            results["coherence"],
            options.coherence_subsets_per_size,
            options.seed,
            options.batch_size,
        )
        results["coherence_by_size"] = {**by_size, "joint_coherence": results["joint_coherence"]}

    stage("classifiers", f"classifiers for coherence (cache {cache})", train_or_load)
    results["classifier_check"] = check_classifiers(
        {name: c.card.test_accuracy for name, c in classifiers.items()},
        {name: _labelled(scored, i, name)[1] for i, name in enumerate(names)},
        options.min_classifier_accuracy,
    )
    stage("coherence", "coherence", coherence)
    stage(
        "latent_probe",
        f"latent probe ({options.probe_examples} training rows)",
        lambda: results.update(
            latent_probe=latent_classification(
                model,
                fit.batch,
                fit_labels,
                test,
                labels,
                subsets,
                options.probe_examples,
                options.seed,
            )
        ),
    )
    return classifiers


def _fid_stage(
    stage: _Stages,
    results: dict[str, Any],
    model: MultiModalVAE,
    test: Batch,
    subsets: list[Subset],
    classifiers: dict[str, TrainedClassifier],
    options: EvalOptions,
) -> None:
    """FID of each image modality generated from each S without it and from the prior
    (`mmtrain.evaluation.fid`); nothing without image modalities or usable features."""
    images = image_modalities(model)
    if not images or options.fid_features == "none":
        return
    names = list(model.modality_names)

    def compute() -> None:
        ranges = {n: value_range(test.x[n][test.avail[:, names.index(n)].bool()]) for n in images}
        features = choose_features(
            options.fid_features, images, classifiers, ranges, options.fid_weights, stage.log
        )
        if features is None:
            return
        torch.manual_seed(options.seed + 3)
        results["fid"] = fid_metrics(
            model, test, subsets, features, options.fid_samples, options.batch_size
        )

    stage("fid", f"FID of {', '.join(images)} ({options.fid_samples} images per set)", compute)


def _unseen_labels_warning(labels: torch.Tensor, fit_labels: torch.Tensor) -> str | None:
    unseen = sorted(set(labels[labels >= 0].tolist()) - set(fit_labels.tolist()))
    if not unseen:
        return None
    return (
        f"the scored rows hold labels {unseen} that no training row has, so the "
        "classifiers and the latent probe cannot predict them and their accuracies "
        "are low for that reason (the data are split by label, as the multimodal "
        "iVAE data's faithful split by segment)"
    )


def likelihood_metrics(
    model: MultiModalVAE, test: Batch, subsets: list[Subset], options: EvalOptions
) -> dict[str, Any]:
    """Joint and conditional estimates per subset; with missing modalities also log p̂ of
    each row's observed modalities (the scripts' number)."""
    table = log_likelihood_table(
        model, test, subsets, options.is_samples, options.batch_size, options.chunk_size
    )
    out: dict[str, Any] = {
        "num_samples": options.is_samples,
        "joint": table.joint(),
        "conditional": table.conditional(),
    }
    if not bool(test.avail.bool().all()):
        pieces = []
        for _, part in test.chunks(options.batch_size):
            with torch.no_grad():
                pieces.append(
                    importance_sampling(model, part, options.is_samples, None, options.chunk_size)
                )
        values = torch.cat([p.log_likelihood for p in pieces]).double()
        errors = torch.cat([p.stderr for p in pieces])
        out["observed"] = {
            "mean": float(values.mean()),
            "mc_stderr": combined_stderr(errors),
            "rows": int(values.numel()),
        }
    return out


def exact_metrics(model: MultiModalVAE, test: Batch, subsets: list[Subset]) -> dict[str, Any]:
    """`exact` (`exact_linear_metrics`) and `exact_subsets`: the mean exact log p(x_S) over
    the rows observing S, beside each importance-sampled estimate."""
    per_subset = {}
    for subset in subsets:
        values = exact_subset_log_likelihood(model, test, subset)
        values = values[~values.isnan()]
        if values.numel():
            per_subset[subset.name] = float(values.mean())
    return {"exact": exact_linear_metrics(model, test), "exact_subsets": per_subset}


def _classifiers(
    model: MultiModalVAE,
    fit: SplitData,
    test: SplitData,
    cache: Path,
    options: EvalOptions,
    log: Log,
) -> dict[str, TrainedClassifier]:
    """One classifier per modality on the labelled rows observing it (fit: training rows;
    scored on the test rows), cached under `cache`."""
    names = list(model.modality_names)
    fit_labels, test_labels = class_labels(fit.batch), class_labels(test.batch)
    assert fit_labels is not None and test_labels is not None
    num_classes = int(max(int(test_labels.max()), int(fit_labels.max()))) + 1
    train_x, train_y, test_x, test_y = {}, {}, {}, {}
    for index, name in enumerate(names):
        train_x[name], train_y[name] = _labelled(fit, index, name)
        test_x[name], test_y[name] = _labelled(test, index, name)
    return classifiers_for(
        names,
        {name: modality_is_categorical(model, name) for name in names},
        train_x,
        train_y,
        test_x,
        test_y,
        num_classes,
        cache,
        options.classifier_epochs,
        options.seed,
        log,
    )


def summarize(
    results: dict[str, Any], subsets: list[Subset], full: Subset | None
) -> dict[str, float]:
    """The headline numbers (joint log-likelihood, mean coherences, probe accuracy, MCC),
    derived from the tidy table of the per-subset numbers (`mmtrain.evaluation.tables`).
    `results` gains both tables as records (`table`, `headline`); the return value is the
    flat `summary` mapping of `metrics.json` (`joint_ll`, `coherence/mnist`, ...)."""
    table = evaluation_table(results, subsets)
    modalities = list(dict.fromkeys(name for subset in subsets for name in subset.names))
    headline = headline_table(table, None if full is None else full.name, modalities)
    results["table"] = records(table)
    results["headline"] = records(headline)
    return summary_dict(headline)


def draw_pictures(
    loaded: LoadedModel,
    test: Batch,
    subsets: list[Subset],
    out: Path,
    options: EvalOptions,
    by_size: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Every picture that applies; `{key: file name relative to out}`. `by_size`: the
    coherence by the number of given modalities, drawn when given."""
    model = loaded.model
    torch.manual_seed(options.seed + 2)
    made: dict[str, str] = {}
    examples = options.picture_examples
    made["cross_generation"] = pictures.cross_generation_figure(
        model, test, subsets, out / "cross_generation.png", examples
    ).name
    made["reconstructions"] = pictures.reconstructions_figure(
        model, test, out / "reconstructions.png", max(examples, 12)
    ).name
    made["prior_samples"] = pictures.prior_samples_figure(
        model, test, out / "prior_samples.png", examples
    ).name
    projection_subsets = [s for s in subsets if s.size == 1] + [subsets[-1]]
    if subsets[-1].size == 1:
        projection_subsets = projection_subsets[:-1]
    made["latent_projection"] = pictures.latent_projection_figure(
        model, test, projection_subsets, out / "latent_projection.png"
    ).name
    if by_size is not None and by_size["sizes"]:
        made["coherence_by_size"] = pictures.coherence_by_size_figure(
            by_size["sizes"], by_size.get("joint_coherence"), out / "coherence_by_size.png"
        ).name
    if loaded.run_dir is not None and (loaded.run_dir / "metrics.jsonl").is_file():
        curves = pictures.training_curves_figure(
            loaded.run_dir / "metrics.jsonl", out / "training_curves.png"
        )
        if curves is not None:
            made["training_curves"] = curves.name
    return made


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def evaluate_checkpoint(
    path: str | Path,
    out: str | Path | None = None,
    source: str | None = None,
    options: EvalOptions | None = None,
    log: Log = _stderr,
) -> dict[str, Any]:
    """Load a checkpoint, run directory or bundle and evaluate it (see `evaluate_model`).

    `source` points the evaluation at another dataset with the same columns (a directory of
    files, a Hub name, or an embedded dataset with other options)."""
    options = (options or EvalOptions()).validate()
    loaded = load_for_eval(path)
    if source is not None:
        loaded.extra["source"] = source
    output = Path(out) if out is not None else default_output(loaded)
    best = loaded.extra.get("best")
    chosen = f" (the best checkpoint: {describe_best(best)})" if best else ""
    log(f"evaluating {loaded.path}{chosen} → {output}")
    data = read_eval_data(loaded.config, options, source)
    return evaluate_model(loaded, data, output, options, log)
