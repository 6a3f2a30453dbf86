"""Coherence, joint coherence, the latent probe and MCC, each against a computation that
does not go through the code under test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from mmtrain import metrics
from mmtrain.batch import Batch
from mmtrain.evaluation.classifiers import (
    TrainedClassifier,
    choose_architecture,
    classifiers_for,
    load_classifier,
    save_classifier,
    train_classifier,
)
from mmtrain.evaluation.coherence import (
    conditional_generator,
    cross_coherence,
    joint_coherence,
    joint_coherence_of,
)
from mmtrain.evaluation.probe import latent_classification, probe_accuracy
from mmtrain.evaluation.simulated import mcc_metrics
from mmtrain.evaluation.subsets import Subset, enumerate_subsets
from tests.evaluation.models import blobs, linear_gaussian_model, one_hot_labels, prototype_model

PROTOTYPES = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])


@pytest.fixture(scope="module")
def blob_data() -> dict[str, object]:
    """Overlapping blobs (a classifier cannot be perfect) with their one-hot labels."""
    x_train, y_train = blobs(600, PROTOTYPES, 0.9, seed=0)
    x_test, y_test = blobs(400, PROTOTYPES, 0.9, seed=1)
    torch.manual_seed(0)
    x_classifier = train_classifier("x", x_train, y_train, x_test, y_test, 3, epochs=8)
    u_classifier = train_classifier(
        "u",
        one_hot_labels(y_train, 3),
        y_train,
        one_hot_labels(y_test, 3),
        y_test,
        3,
        categorical=True,
        epochs=3,
    )
    test = Batch(
        {"u": one_hot_labels(y_test, 3), "x": x_test},
        torch.ones(400, 2, dtype=torch.bool),
        y_test,
    )
    return {
        "classifiers": {"u": u_classifier, "x": x_classifier},
        "test": test,
        "train": Batch(
            {"u": one_hot_labels(y_train, 3), "x": x_train},
            torch.ones(600, 2, dtype=torch.bool),
            y_train,
        ),
    }


def perfect_generator(batch: Batch, subset: Subset) -> dict[str, torch.Tensor]:
    """Generates each row's own true values, whatever S."""
    return dict(batch.x)


def test_coherence_of_a_perfect_generator_equals_the_classifier_accuracy(blob_data) -> None:
    classifiers: dict[str, TrainedClassifier] = blob_data["classifiers"]
    test: Batch = blob_data["test"]
    x_accuracy = classifiers["x"].card.test_accuracy
    assert 0.6 < x_accuracy < 0.97  # the blobs overlap: the classifier is imperfect
    assert classifiers["u"].card.test_accuracy == 1.0
    subsets = enumerate_subsets(["u", "x"])
    result = cross_coherence(test, test.labels, subsets, classifiers, perfect_generator, 64)
    for subset in subsets:
        assert result[subset.name]["x"]["accuracy"] == pytest.approx(x_accuracy, abs=1e-12)
        assert result[subset.name]["u"]["accuracy"] == 1.0
        assert result[subset.name]["x"]["rows"] == 400


def test_coherence_counts_only_rows_that_observe_s_and_have_labels(blob_data) -> None:
    classifiers = blob_data["classifiers"]
    test: Batch = blob_data["test"]
    avail = test.avail.clone()
    avail[::3, 0] = False
    labels = test.labels.clone()
    labels[1::5] = -1
    masked = Batch(test.x, avail, labels)
    given_u = Subset((0,), ("u",))
    result = cross_coherence(masked, labels, [given_u], classifiers, perfect_generator, 50)
    rows = avail[:, 0] & (labels >= 0)
    network = classifiers["x"].network
    with torch.no_grad():
        expected = (network(test.x["x"][rows]).argmax(-1) == labels[rows]).double().mean()
    assert result["u"]["x"]["rows"] == int(rows.sum())
    assert result["u"]["x"]["accuracy"] == pytest.approx(float(expected), abs=1e-12)


def test_a_generator_of_class_prototypes_is_as_coherent_as_the_classifier_on_them(
    blob_data,
) -> None:
    """The model decodes x = prototype[label] from q(z | u): coherence u → x is the
    classifier's accuracy on the prototypes, weighted by the labels' frequencies."""
    classifiers = blob_data["classifiers"]
    test: Batch = blob_data["test"]
    model = prototype_model(PROTOTYPES)
    torch.manual_seed(0)
    given_u = Subset((0,), ("u",))
    result = cross_coherence(
        test, test.labels, [given_u], classifiers, conditional_generator(model), 100
    )
    with torch.no_grad():
        on_prototypes = classifiers["x"].network(PROTOTYPES).argmax(-1) == torch.arange(3)
    expected = on_prototypes.double()[test.labels].mean()
    assert result["u"]["x"]["accuracy"] == pytest.approx(float(expected), abs=1e-12)
    assert result["u"]["u"]["accuracy"] == 1.0  # reconstruction of the label itself


def test_joint_coherence_counts_agreeing_predictions(blob_data) -> None:
    classifiers = blob_data["classifiers"]
    test: Batch = blob_data["test"]
    with torch.no_grad():
        predictions = [classifiers[n].network(test.x[n]).argmax(-1) for n in ("u", "x")]
    expected = float((predictions[0] == predictions[1]).double().mean())
    assert joint_coherence_of(dict(test.x), classifiers) == pytest.approx(expected)
    model = prototype_model(PROTOTYPES)
    value = joint_coherence(model, classifiers, num_samples=300, batch_size=128)
    assert 0.0 <= value <= 1.0


def test_classifier_cache_round_trips_without_pickle(tmp_path, blob_data) -> None:
    classifier: TrainedClassifier = blob_data["classifiers"]["x"]
    save_classifier(classifier, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors"]
    loaded = load_classifier(tmp_path, "x")
    assert loaded is not None and loaded.card == classifier.card
    x = blob_data["test"].x["x"]
    assert torch.equal(loaded.predict(x), classifier.predict(x))
    train: Batch = blob_data["train"]
    test: Batch = blob_data["test"]
    reused = classifiers_for(
        ["x"],
        {"x": False},
        {"x": train.x["x"]},
        {"x": train.labels},
        {"x": test.x["x"]},
        {"x": test.labels},
        3,
        tmp_path,
        epochs=8,
        seed=0,
    )
    assert reused["x"].card.seconds == classifier.card.seconds  # loaded, not retrained
    assert choose_architecture((1, 28, 28)) == "conv"
    assert choose_architecture((8, 45)) == "sequence"
    assert choose_architecture((1, 10)) == "mlp"


def test_latent_probe_scores_one_on_linearly_separable_latents() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = 6.0 * torch.eye(4)
    labels = torch.randint(0, 4, (700,), generator=generator)
    z = centres[labels] + 0.5 * torch.randn(700, 4, generator=generator)
    accuracy = probe_accuracy(
        z[:500].numpy(), labels[:500].numpy(), z[500:].numpy(), labels[500:].numpy()
    )
    assert accuracy == 1.0
    reference = LogisticRegression(max_iter=2000).fit(z[:500], labels[:500])
    assert reference.score(z[500:], labels[500:]) == 1.0


def test_latent_probe_wiring_reads_the_posterior_of_each_subset(blob_data) -> None:
    """q(z | u) is the one-hot label (probe: 1), q(z | x) ignores x (probe: chance)."""
    model = prototype_model(PROTOTYPES)
    train: Batch = blob_data["train"]
    test: Batch = blob_data["test"]
    subsets = enumerate_subsets(["u", "x"])
    result = latent_classification(
        model, train, train.labels, test, test.labels, subsets, num_train=200
    )
    assert result["u"]["accuracy"] == 1.0 and result["u"]["train_rows"] == 200
    assert result["u+x"]["accuracy"] == 1.0
    assert result["x"]["accuracy"] < 0.6
    assert result["x"]["test_rows"] == 400


def test_mcc_wiring_matches_the_foundation_metric() -> None:
    """A near-noiseless linear model whose posterior mean recovers the sources: MCC of the
    evaluation equals `metrics.compute_mcc_permuted` (rows in a seeded random order) on the
    same posterior draw, and is near 1."""
    lg = linear_gaussian_model(sizes=(3, 3), latent=2, noise_std=0.02, seed=5)
    batch, sources = lg.sample(400, seed=6)
    batch.extras["sources"] = sources.double()
    subsets = enumerate_subsets(lg.model.modality_names)
    torch.manual_seed(7)
    result = mcc_metrics(lg.model, batch, subsets, seed=0)
    torch.manual_seed(7)
    with torch.no_grad():
        z = lg.model.encode(batch).rsample(1)[0]
    expected = metrics.compute_mcc_permuted(sources.numpy(), z.double().numpy(), 1, 0).as_dict()
    for key, value in expected.items():
        assert result["observed"][key] == pytest.approx(value)
    assert result["observed"]["strong_out"] > 0.97
    assert set(result) == {"observed", "x1", "x2", "x1+x2"}
    assert np.isfinite([result[s]["strong_out"] for s in result]).all()
