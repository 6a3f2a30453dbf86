"""FID: the Fréchet distance against its closed form computed with SciPy, both feature paths
(our classifier's penultimate layer; Inception-v3 with random weights where torch-fidelity
imports), and the per-modality sets of the evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from mmtrain.batch import Batch
from mmtrain.errors import ConfigError
from mmtrain.evaluation import fid
from mmtrain.evaluation.classifiers import train_classifier
from mmtrain.evaluation.coherence import decoder_means
from mmtrain.evaluation.fid import (
    ClassifierFeatures,
    FrechetDistance,
    choose_features,
    fid_metrics,
    image_modalities,
    inception_unavailable,
    rgb_bytes,
)
from mmtrain.evaluation.subsets import enumerate_subsets
from tests.evaluation.models import image_label_model, quadrant_images

CLASSES = 3


class Identity(nn.Module):
    """The features are the values themselves (`[B, d]`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


def exact_sample(mean: np.ndarray, cov: np.ndarray, rows: int, seed: int) -> torch.Tensor:
    """`rows` points whose sample mean is `mean` and sample covariance (ddof 1) is `cov`
    exactly: white noise made exactly white, then coloured."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return torch.from_numpy(mean + z @ np.linalg.cholesky(cov).T)


def closed_form(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||μ1 − μ2||² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½) with SciPy's matrix square root."""
    root = scipy.linalg.sqrtm(cov1 @ cov2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * np.real(root)))


def closed_form_psd(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """The same for singular covariances (features of ReLU units that never fire):
    tr (Σ1 Σ2)^½ = tr (Σ1^½ Σ2 Σ1^½)^½, from symmetric eigendecompositions."""
    values, vectors = scipy.linalg.eigh(cov1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    inner = scipy.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_root = np.sum(np.sqrt(np.clip(inner, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_root)


def test_frechet_distance_of_diagonal_gaussians_is_the_analytic_value() -> None:
    """Diagonal covariances commute: (Σ1 Σ2)^½ = diag(√(a b)), so the distance is
    ||μ1 − μ2||² + Σ (√a − √b)²."""
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, -0.5])
    a, b = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
    analytic = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert closed_form(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(analytic, rel=1e-12)
    assert closed_form_psd(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(analytic, rel=1e-12)
    distance = FrechetDistance(Identity(4), batch_size=64)
    distance.add_real(exact_sample(mu1, np.diag(a), 300, seed=0))
    value = distance(exact_sample(mu2, np.diag(b), 200, seed=1))
    assert value == pytest.approx(analytic, rel=1e-9)


def test_frechet_distance_of_full_covariances_matches_scipy() -> None:
    """Covariances that do not commute, against SciPy's sqrtm; and the same distance twice
    from the same reference (the real statistics are kept between sets)."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    cov1, cov2 = a @ a.T + 0.5 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    assert not np.allclose(cov1 @ cov2, cov2 @ cov1)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    expected = closed_form(mu1, cov1, mu2, cov2)
    distance = FrechetDistance(Identity(5), batch_size=10_000)
    distance.add_real(exact_sample(mu1, cov1, 400, seed=3))
    fake = exact_sample(mu2, cov2, 250, seed=4)
    assert distance(fake) == pytest.approx(expected, rel=1e-8)
    assert distance(fake) == pytest.approx(expected, rel=1e-8)
    # a large sample from the Gaussians themselves comes close (FID's small-sample bias)
    x1 = rng.multivariate_normal(mu2, cov2, size=40_000)
    assert distance(torch.from_numpy(x1)) == pytest.approx(expected, rel=0.02)


def test_identical_sets_are_at_distance_zero_and_tiny_sets_are_nan() -> None:
    points = torch.randn(500, 6, generator=torch.Generator().manual_seed(0))
    distance = FrechetDistance(Identity(6))
    distance.add_real(points)
    assert abs(distance(points)) < 1e-8
    assert distance(points + 1.0) == pytest.approx(6.0, rel=1e-7)  # mean shift only
    assert np.isnan(distance(points[:1]))


def test_rgb_bytes_repeats_channels_and_maps_the_range() -> None:
    grey = torch.tensor([0.0, 0.5, 1.0, 2.0]).reshape(1, 1, 2, 2)
    out = rgb_bytes(grey)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 2, 2)
    assert out[0, 0].flatten().tolist() == [0, 128, 255, 255]
    assert torch.equal(out[0, 0], out[0, 2])
    two = torch.stack([grey[:, 0], 1 - grey[:, 0]], 1)
    assert torch.equal(rgb_bytes(two), out)  # grey + alpha: the grey channel
    rgba = torch.rand(2, 4, 3, 3)
    assert torch.equal(rgb_bytes(rgba), rgb_bytes(rgba[:, :3]))
    assert rgb_bytes(torch.full((1, 1, 1, 1), -1.0), low=-1.0, high=1.0).sum() == 0
    with pytest.raises(ConfigError):
        rgb_bytes(torch.rand(1, 5, 4, 4))


@pytest.fixture(scope="module")
def image_case() -> dict[str, object]:
    """The tiny image + label model, labelled test rows and a trained image classifier."""
    model = image_label_model(classes=CLASSES)
    images, labels = quadrant_images(300, CLASSES, seed=0)
    train_images, train_labels = quadrant_images(300, CLASSES, seed=1)
    one_hot = torch.nn.functional.one_hot(labels, CLASSES).float()[:, None]
    batch = Batch({"image": images, "label": one_hot}, torch.ones(300, 2, dtype=torch.bool), labels)
    torch.manual_seed(0)
    classifier = train_classifier(
        "image", train_images, train_labels, images, labels, CLASSES, epochs=3
    )
    return {"model": model, "batch": batch, "classifier": classifier}


def test_classifier_features_path_on_a_tiny_model(image_case) -> None:
    model, batch, classifier = image_case["model"], image_case["batch"], image_case["classifier"]
    assert image_modalities(model) == ["image"]
    assert classifier.card.test_accuracy > 0.9
    features = choose_features("classifier", ["image"], {"image": classifier}, {})
    assert features is not None and features.kind == "classifier"
    subsets = enumerate_subsets(model.modality_names)
    torch.manual_seed(5)
    result = fid_metrics(model, batch, subsets, features, samples=250, batch_size=100)
    image = result["modalities"]["image"]
    assert result["features"] == "classifier" and image["real_rows"] == 250
    assert set(image["from"]) == {"label", "∅"}  # S without the image, and the prior
    assert image["from"]["label"]["rows"] == 250 and image["from"]["∅"]["rows"] == 250
    assert all(np.isfinite(e["fid"]) and e["fid"] > 0 for e in image["from"].values())
    # the prior set recomputed without the code under test: same draws, SciPy's formula
    torch.manual_seed(5)
    with torch.no_grad():
        draws = [
            decoder_means(model, model.prior.sample(n), ["image"])["image"] for n in (100,) * 2
        ]
        draws.append(decoder_means(model, model.prior.sample(50), ["image"])["image"])
    real = classifier.features(batch.x["image"][:250], generated=True).double().numpy()
    fake = classifier.features(torch.cat(draws), generated=True).double().numpy()
    expected = closed_form_psd(
        real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False)
    )
    torch.manual_seed(5)
    again = fid_metrics(model, batch, [], features, samples=250, batch_size=100)
    assert again["modalities"]["image"]["from"]["∅"]["fid"] == pytest.approx(expected, rel=1e-5)
    # the real images against themselves through the classifier features
    distance = FrechetDistance(ClassifierFeatures(classifier))
    distance.add_real(batch.x["image"])
    assert abs(distance(batch.x["image"])) < 1e-6


def test_feature_choice_without_torch_fidelity(image_case, monkeypatch) -> None:
    classifier = image_case["classifier"]
    monkeypatch.setattr(fid, "inception_unavailable", lambda: "torch-fidelity is not installed")
    with pytest.raises(ConfigError, match="torch-fidelity is not installed"):
        choose_features("inception", ["image"], {"image": classifier}, {})
    auto = choose_features("auto", ["image"], {"image": classifier}, {})
    assert auto is not None and auto.kind == "classifier"
    assert "not Inception-v3: torch-fidelity is not installed" in auto.note
    assert choose_features("auto", ["image"], {}, {}) is None  # no labels: no classifier
    # torch-fidelity importable but no GPU: auto keeps to the cheap classifier features
    monkeypatch.setattr(fid, "inception_unavailable", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    auto = choose_features("auto", ["image"], {"image": classifier}, {})
    assert auto is not None and auto.kind == "classifier" and "no GPU" in auto.note
    assert choose_features("none", ["image"], {"image": classifier}, {}) is None
    with pytest.raises(ConfigError):
        choose_features("pixels", ["image"], {}, {})


def test_inception_path_with_random_weights(image_case, tmp_path, monkeypatch) -> None:
    """The Inception-v3 features of torchmetrics/torch-fidelity with randomly initialised
    weights read from a local file (no network). Needs torch-fidelity, which needs a
    torchvision that imports: skipped where there is none."""
    reason = inception_unavailable()
    if reason is not None:
        pytest.skip(reason)
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    with monkeypatch.context() as patch:  # build it once without loading weights
        patch.setattr(inception, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda *a: None)
        torch.manual_seed(0)
        network = fid.inception_network(None)
    weights = tmp_path / "inception-random.pth"
    torch.save(network.state_dict(), weights)
    model, batch = image_case["model"], image_case["batch"]
    small = batch.take(torch.arange(6))
    features = choose_features("inception", ["image"], {}, {"image": (0.0, 1.0)}, weights)
    assert features is not None and features.kind == "inception"
    assert features.modules["image"](small.x["image"]).shape == (6, 2048)
    result = fid_metrics(model, small, enumerate_subsets(["image", "label"]), features, samples=6)
    values = [e["fid"] for e in result["modalities"]["image"]["from"].values()]
    assert len(values) == 2 and all(np.isfinite(values))
    distance = FrechetDistance(features.modules["image"])
    distance.add_real(small.x["image"])
    assert abs(distance(small.x["image"])) < 1e-3


def test_eval_of_an_image_model_reports_fid_and_coherence_by_size(image_case, tmp_path) -> None:
    """`evaluate_model` end to end on the tiny image + label model: FID rows in metrics.json,
    metrics.csv, the summary and report.md; the coherence-by-size table and its picture."""
    from PIL import Image

    from mmtrain.config import config_from_dict
    from mmtrain.evaluation.data import SplitData
    from mmtrain.evaluation.runner import EvalData, EvalOptions, LoadedModel, evaluate_model
    from mmtrain.evaluation.tables import read_csv

    model, batch = image_case["model"], image_case["batch"]
    images, labels = quadrant_images(300, CLASSES, seed=1)
    one_hot = torch.nn.functional.one_hot(labels, CLASSES).float()[:, None]
    fit = Batch({"image": images, "label": one_hot}, torch.ones(300, 2, dtype=torch.bool), labels)
    data = EvalData(SplitData("test", batch, 300), SplitData("train", fit, 300), "synthetic")
    loaded = LoadedModel(model, config_from_dict({}), tmp_path / "model", None, None)
    options = EvalOptions(
        is_samples=2,
        batch_size=100,
        classifier_epochs=2,
        joint_samples=100,
        probe_examples=100,
        fid_features="classifier",
        fid_samples=200,
        picture_examples=4,
    )
    out = tmp_path / "eval"
    results = evaluate_model(loaded, data, out, options, log=lambda message: None)
    image = results["fid"]["modalities"]["image"]
    assert set(image["from"]) == {"label", "∅"} and image["real_rows"] == 200
    assert results["summary"]["fid/image"] == image["from"]["label"]["fid"]
    assert results["summary"]["fid_prior/image"] == image["from"]["∅"]["fid"]
    table = read_csv(out / "metrics.csv")
    assert len(table[table.metric == "fid"]) == 2
    report = (out / "report.md").read_text()
    assert "## FID per image modality" in report and "| ∅ (prior) |" in report
    assert "penultimate layer of mmtrain's classifier" in report
    assert "## Coherence by number of given modalities" in report
    assert "![coherence by number of given modalities](coherence_by_size.png)" in report
    with Image.open(out / "coherence_by_size.png") as picture:
        assert picture.format == "PNG" and picture.width > 300
    assert [e["given"] for e in results["coherence_by_size"]["sizes"]] == [1]


def test_an_explicit_feature_choice_that_cannot_run_fails_before_the_evaluation(
    image_case, tmp_path, monkeypatch
) -> None:
    """`--fid-features inception` without torch-fidelity stops at once with the reason and
    the remedy, before the long stages (nothing is written); bad FID options are refused."""
    from mmtrain.config import config_from_dict
    from mmtrain.evaluation.data import SplitData
    from mmtrain.evaluation.runner import EvalData, EvalOptions, LoadedModel, evaluate_model

    monkeypatch.setattr(fid, "inception_unavailable", lambda: "torch-fidelity is not installed")
    model, batch = image_case["model"], image_case["batch"]
    data = EvalData(SplitData("test", batch, 300), None, "synthetic")
    loaded = LoadedModel(model, config_from_dict({}), tmp_path / "model", None, None)
    out = tmp_path / "eval"
    with pytest.raises(ConfigError, match="not installed; install the optional extra"):
        evaluate_model(loaded, data, out, EvalOptions(fid_features="inception"))
    assert not out.exists()
    with pytest.raises(ConfigError, match="fid-samples"):
        EvalOptions(fid_samples=1).validate()
    with pytest.raises(ConfigError, match="fid-features"):
        EvalOptions(fid_features="pixels").validate()
