"""Fréchet distances (FID) of generated images to the test images, per image modality.

For each image modality j (event shape `[C, H, W]`, C ≤ 4, H and W ≥ 4, not categorical) the
test images of j (the scored rows observing j, at most `samples` of them) are compared with
decoder means of j generated

- from every evaluated conditioning subset S that leaves j out: one draw z ~ q(z | x_S) per
  scored row observing S (at most `samples` rows), as MoPoE (Sutter et al., 2021) and
  MMVAE+ (Palumbo et al., 2023) report the FID of each modality generated from subsets of
  the others; the leave-one-out set is "from all other modalities";
- from the prior: `samples` draws z ~ p(z) (unconditional generation), subset `∅`.

The distance is torchmetrics' `FrechetInceptionDistance` with our feature module as its
custom `feature`: float64 sums of the features and of their outer products, then
||μ_r − μ_g||² + tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½). FID is biased upwards at small sample sizes,
so only figures computed from equally many images compare.

Features (`--fid-features`):

classifier
    The penultimate layer (`HIDDEN` = 128 units) of mmtrain's own classifier of j
    (`TrainedClassifier.features`), read at the modality's own size and channels, with real
    and generated images clipped to the classifier's training range alike. Works offline.
    These FIDs compare models evaluated with the same classifier (same data, epochs and
    seed: the cached one), never published Inception FIDs.
inception
    The 2048 pool features of Inception-v3 with the TensorFlow FID weights: torchmetrics'
    wrapper of torch-fidelity's network, with its TensorFlow-compatible resize (the standard
    FID). Needs torch-fidelity, whose package imports torchvision (`pip install
    'mmtrain[inception]'`; PyPI's torchvision does not import beside a CPU-only torch). The
    weights come from `--fid-weights PATH` (torch-fidelity's `.pth` file, which it reads with
    `torch.load`: use a file you trust) or are downloaded by torch-fidelity into torch's hub
    cache. Images are mapped from the test images' value range to bytes 0..255; one channel
    is repeated to RGB, two (grey + alpha) use the first, four (RGBA) drop the fourth; the
    network resizes every image bilinearly to 299 × 299 (a 28 × 28 digit is upsampled
    about 10.7 times). It runs on the GPU when there is one; on a CPU it is costly (about
    6 GFLOP per image: `--fid-samples` bounds the sets).
auto
    inception when torch-fidelity imports, there is a GPU to run it on and its weights load;
    classifier otherwise (the report says why).
"""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmtrain.batch import Batch
from mmtrain.errors import ConfigError
from mmtrain.evaluation.classifiers import (
    TrainedClassifier,
    choose_architecture,
    modality_is_categorical,
)
from mmtrain.evaluation.coherence import decoder_means
from mmtrain.evaluation.subsets import EMPTY_NAME, Subset
from mmtrain.model import MultiModalVAE

#: the choices of `--fid-features`
FEATURES = ("auto", "inception", "classifier", "none")
#: width of Inception-v3's pool features
INCEPTION_FEATURES = 2048
#: how `mmtrain eval` installs the Inception features
INCEPTION_HINT = (
    "install the optional extra mmtrain[inception] (torch-fidelity, which needs a torchvision "
    "that imports beside your torch) or use --fid-features classifier"
)

Log = Callable[[str], None]


def _fid_metric_class() -> type:
    """torchmetrics' `FrechetInceptionDistance`, or a ConfigError saying why it won't import
    (torchmetrics imports torch-fidelity when that is installed, and torch-fidelity imports
    torchvision)."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except Exception as error:  # ImportError, or RuntimeError from a broken torchvision
        raise ConfigError(
            f"torchmetrics does not import ({type(error).__name__}: {error}); with "
            "torch-fidelity installed it also needs a torchvision that imports beside torch: "
            "install a matching torchvision or uninstall torch-fidelity"
        ) from None
    return FrechetInceptionDistance


def fid_unavailable(kind: str) -> str | None:
    """Why `--fid-features kind` cannot run here (torchmetrics or, for inception,
    torch-fidelity does not import), or None when it can; checked before the evaluation's
    long stages."""
    if kind == "none":
        return None
    try:
        _fid_metric_class()
    except ConfigError as error:
        return str(error)
    reason = inception_unavailable() if kind == "inception" else None
    return None if reason is None else f"{reason}; {INCEPTION_HINT}"


def inception_unavailable() -> str | None:
    """Why the Inception features cannot be used here, or None when they can."""
    if importlib.util.find_spec("torch_fidelity") is None:
        return "torch-fidelity is not installed"
    try:
        import torch_fidelity.feature_extractor_inceptionv3  # noqa: F401
    except Exception as error:  # torch-fidelity's package imports torchvision
        return (
            f"torch-fidelity does not import ({type(error).__name__}: {error}); it needs a "
            "torchvision that imports beside this torch"
        )
    return None


def image_modalities(model: MultiModalVAE) -> list[str]:
    """The modalities FID applies to: images `[C, H, W]` (the shapes the classifiers read
    with a conv net) whose decoder does not output categorical probabilities."""
    return [
        name
        for name in model.modality_names
        if choose_architecture(tuple(model.modalities[name].event_shape)) == "conv"
        and not modality_is_categorical(model, name)
    ]


# ----------------------------------------------------------------------------- features


class ClassifierFeatures(nn.Module):
    """`images [B, *event] → [B, 128]` float64: the penultimate layer of a modality's
    classifier."""

    def __init__(self, classifier: TrainedClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.network.embedding_size

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier.features(images, generated=True).double()


def rgb_bytes(images: Tensor, low: float = 0.0, high: float = 1.0) -> Tensor:
    """`[B, C, H, W]` values in `[low, high]` → `[B, 3, H, W]` uint8 as Inception-v3 reads
    them: C = 1 repeated, C = 2 its first channel repeated, C = 3 as is, C = 4 without the
    fourth; values mapped linearly to 0..255 (clipped)."""
    if images.dim() != 4 or not 1 <= images.shape[1] <= 4:
        raise ConfigError(f"Inception features need [B, C ≤ 4, H, W] images, got {images.shape}")
    x = (images.float() - low) / max(high - low, 1e-12)
    channels = images.shape[1]
    if channels in (1, 2):
        x = x[:, :1].expand(-1, 3, -1, -1)
    elif channels == 4:
        x = x[:, :3]
    return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


class InceptionFeatures(nn.Module):
    """`images [B, C, H, W] → [B, 2048]` float64: Inception-v3 pool features of the images
    made RGB bytes by `rgb_bytes` (the network resizes them to 299 × 299)."""

    num_features = INCEPTION_FEATURES

    def __init__(self, network: nn.Module, low: float, high: float) -> None:
        super().__init__()
        self.network = network
        self.low, self.high = float(low), float(high)

    def forward(self, images: Tensor) -> Tensor:
        device = next(self.network.parameters()).device
        x = rgb_bytes(images, self.low, self.high).to(device)
        return self.network(x).double().cpu()


#: seconds a download of the Inception weights may stall before it counts as failed
DOWNLOAD_TIMEOUT = 60.0


def inception_network(weights: Path | None) -> nn.Module:
    """torchmetrics' Inception-v3 feature network (torch-fidelity's port of the TensorFlow
    FID network, pool features) with the weights at `weights`, or downloaded by
    torch-fidelity into torch's hub cache when None; on the GPU when there is one."""
    reason = inception_unavailable()
    if reason is not None:
        raise ConfigError(f"--fid-features inception: {reason}; {INCEPTION_HINT}")
    if weights is not None and not Path(weights).is_file():
        raise ConfigError(f"--fid-weights {weights}: no such file")
    from torchmetrics.image.fid import NoTrainInceptionV3

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # a stalled download fails instead of hanging
    try:
        network = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(INCEPTION_FEATURES)],
            feature_extractor_weights_path=None if weights is None else str(weights),
            antialias=False,  # torch-fidelity's TensorFlow-compatible resize: the standard FID
        )
    finally:
        socket.setdefaulttimeout(previous)
    return network.to("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------- distance


class FrechetDistance:
    """Fréchet distances of sets of images to one reference set (the real images) in one
    feature space: torchmetrics' `FrechetInceptionDistance` with `features` as its custom
    feature module, keeping the reference statistics between sets."""

    def __init__(self, features: nn.Module, batch_size: int = 250) -> None:
        metric = _fid_metric_class()
        self.metric = metric(feature=features, reset_real_features=False, normalize=True)
        self.batch_size = batch_size
        self.real_rows = 0

    @torch.no_grad()
    def add_real(self, images: Tensor) -> None:
        for start in range(0, images.shape[0], self.batch_size):
            self.metric.update(images[start : start + self.batch_size], real=True)
        self.real_rows += int(images.shape[0])

    @torch.no_grad()
    def __call__(self, images: Tensor) -> float:
        """The Fréchet distance of `images` to the reference set (NaN with fewer than two
        images on either side)."""
        if images.shape[0] < 2 or self.real_rows < 2:
            return float("nan")
        self.metric.reset()
        for start in range(0, images.shape[0], self.batch_size):
            self.metric.update(images[start : start + self.batch_size], real=False)
        return float(self.metric.compute())


# ----------------------------------------------------------------------------- the stage


@dataclass
class FidFeatures:
    """The feature module of each image modality and what they are."""

    kind: str
    modules: dict[str, nn.Module]
    note: str


def choose_features(
    kind: str,
    modalities: Sequence[str],
    classifiers: dict[str, TrainedClassifier],
    ranges: dict[str, tuple[float, float]],
    weights: Path | None = None,
    log: Log | None = None,
) -> FidFeatures | None:
    """The features `--fid-features kind` asks for (see the module's docstring), or None when
    there are none to use (`none`, or classifier features without labelled data). An
    explicit `inception` that cannot run raises; `auto` falls back to the classifier."""
    if kind not in FEATURES:
        raise ConfigError(f"--fid-features must be one of {FEATURES}, got {kind!r}")
    if kind == "none" or not modalities:
        return None
    reason = None
    if kind in ("inception", "auto"):
        features, reason = _inception_features(kind, modalities, ranges, weights)
        if features is not None:
            return features
        if log is not None:
            log(f"FID: classifier features (no Inception-v3: {reason})")
    missing = [n for n in modalities if n not in classifiers]
    if missing:
        if log is not None:
            log(f"FID skipped: no classifier of {missing} (the data have no labels)")
        return None
    modules = {n: ClassifierFeatures(classifiers[n]) for n in modalities}
    note = "penultimate layer of mmtrain's classifier of each modality"
    if reason is not None:
        note += f"; not Inception-v3: {reason}"
    return FidFeatures("classifier", modules, note)


def _inception_features(
    kind: str,
    modalities: Sequence[str],
    ranges: dict[str, tuple[float, float]],
    weights: Path | None,
) -> tuple[FidFeatures | None, str | None]:
    """(the Inception features, None), or (None, why not) for `auto`; an explicit
    `inception` that cannot run raises."""
    reason = inception_unavailable()
    if reason is None and kind == "auto" and not torch.cuda.is_available():
        reason = (
            "no GPU to run it on (about 6 GFLOP per image; --fid-features inception runs it "
            "on the CPU)"
        )
    if reason is not None:
        if kind == "inception":
            raise ConfigError(f"--fid-features inception: {reason}; {INCEPTION_HINT}")
        return None, reason
    try:
        network = inception_network(weights)
    except ConfigError:
        raise
    except Exception as error:  # a failed download, a file that is not a state dict
        why = f"the Inception-v3 weights did not load ({type(error).__name__}: {error})"
        if kind == "inception":
            raise ConfigError(f"--fid-features inception: {why}; pass --fid-weights PATH") from None
        return None, why
    modules = {n: InceptionFeatures(network, *ranges[n]) for n in modalities}
    source = "downloaded weights" if weights is None else f"weights {weights}"
    return FidFeatures("inception", modules, f"Inception-v3 pool features, 2048 ({source})"), None


def _real_images(test: Batch, index: int, name: str, samples: int) -> Tensor:
    return test.x[name][test.avail[:, index].bool()][:samples]


@torch.no_grad()
def _generated_from(
    model: MultiModalVAE, test: Batch, subset: Subset, targets: list[str], samples: int, batch: int
) -> tuple[dict[str, Tensor], int]:
    """Decoder means of `targets` from one draw z ~ q(z | x_S) for each of the first
    `samples` scored rows observing S; and how many rows that is."""
    rows = torch.nonzero(subset.observed(test.avail)).flatten()[:samples]
    pieces: dict[str, list[Tensor]] = {name: [] for name in targets}
    if rows.numel():
        for _, part in test.take(rows).chunks(batch):
            mask = subset.mask(part.size, model.num_modalities, part.avail.device)
            z = model.encode(part, mask).rsample(1)[0]
            for name, values in decoder_means(model, z, targets).items():
                pieces[name].append(values)
    return {n: torch.cat(p) if p else torch.zeros(0) for n, p in pieces.items()}, int(rows.numel())


@torch.no_grad()
def _generated_from_prior(
    model: MultiModalVAE, targets: list[str], samples: int, batch: int
) -> dict[str, Tensor]:
    pieces: dict[str, list[Tensor]] = {name: [] for name in targets}
    for start in range(0, samples, batch):
        z = model.prior.sample(min(batch, samples - start))
        for name, values in decoder_means(model, z, targets).items():
            pieces[name].append(values)
    return {n: torch.cat(p) for n, p in pieces.items()}


def fid_metrics(
    model: MultiModalVAE,
    test: Batch,
    subsets: Sequence[Subset],
    features: FidFeatures,
    samples: int = 1000,
    batch_size: int = 250,
) -> dict[str, Any]:
    """`{"features", "note", "samples", "modalities": {j: {"real_rows", "from": {S: {"fid",
    "rows"}}}}}` for every image modality j with a feature module: S runs over the evaluated
    subsets without j, then `∅` (the prior)."""
    names = list(model.modality_names)
    targets = [n for n in names if n in features.modules]
    distances = {n: FrechetDistance(features.modules[n], batch_size) for n in targets}
    out: dict[str, Any] = {}
    for name in targets:
        distances[name].add_real(_real_images(test, names.index(name), name, samples))
        out[name] = {"real_rows": distances[name].real_rows, "from": {}}
    for subset in subsets:
        wanted = [n for n in targets if n not in subset.names]
        if not wanted:
            continue
        generated, rows = _generated_from(model, test, subset, wanted, samples, batch_size)
        for name in wanted:
            out[name]["from"][subset.name] = {"fid": distances[name](generated[name]), "rows": rows}
    prior = _generated_from_prior(model, targets, samples, batch_size)
    for name in targets:
        out[name]["from"][EMPTY_NAME] = {"fid": distances[name](prior[name]), "rows": samples}
    return {
        "features": features.kind,
        "note": features.note,
        "samples": samples,
        "modalities": out,
    }


def value_range(images: Tensor) -> tuple[float, float]:
    """The range Inception's bytes 0..255 stand for: [0, 1] when the images lie within it
    (or there are none), else their own [min, max]."""
    if images.numel() == 0:
        return 0.0, 1.0
    low, high = float(images.min()), float(images.max())
    if low >= 0.0 and high <= 1.0:
        return 0.0, 1.0
    return low, high
