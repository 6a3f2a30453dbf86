"""Per-modality digit (class) classifiers for coherence, trained by mmtrain on the labelled
training split and cached as safetensors + JSON (never pickle).

The network follows the modality's event shape: a small conv net for images `[C, H, W]`, a
1-D conv net with max pooling over positions for sequences of one-hot symbols `[T, A]`
(text: the word may sit anywhere), and an MLP on the flattened values otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from mmtrain.errors import CheckpointError, ConfigError, DataError
from mmtrain.likelihoods import CategoricalLikelihood
from mmtrain.model import MultiModalVAE

FORMAT = "mmtrain-classifier/1"
#: hidden width of every classifier
HIDDEN = 128
ARCHITECTURES = ("conv", "sequence", "mlp")


def choose_architecture(event_shape: tuple[int, ...]) -> str:
    """`conv` for images `[C, H, W]` (C ≤ 4, H and W ≥ 4), `sequence` for `[T, A]` with
    T ≥ 4 positions, `mlp` for everything else."""
    if len(event_shape) == 3 and event_shape[0] <= 4 and min(event_shape[1:]) >= 4:
        return "conv"
    if len(event_shape) == 2 and event_shape[0] >= 4:
        return "sequence"
    return "mlp"


class ModalityClassifier(nn.Module):
    """`x [B, *event] → logits [B, num_classes]`."""

    def __init__(
        self, event_shape: tuple[int, ...], num_classes: int, arch: str, hidden: int = HIDDEN
    ) -> None:
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ConfigError(f"unknown classifier architecture {arch!r}; use {ARCHITECTURES}")
        if num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.event_shape = tuple(event_shape)
        self.arch = arch
        if arch == "conv":
            channels, height, width = event_shape
            layers: list[nn.Module] = []
            size, width_in = min(height, width), channels
            for out in (32, 64):
                layers += [nn.Conv2d(width_in, out, 3, padding=1), nn.ReLU()]
                if size >= 8:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                width_in = out
            pooled = min(4, size)
            layers += [nn.AdaptiveAvgPool2d(pooled), nn.Flatten()]
            self.features = nn.Sequential(*layers)
            features = 64 * pooled * pooled
        elif arch == "sequence":
            _, symbols = event_shape
            self.features = nn.Sequential(
                _Transpose(),
                nn.Conv1d(symbols, 64, 3, padding=1),
                nn.ReLU(),
                nn.Conv1d(64, 64, 3, padding=1),
                nn.ReLU(),
                _MaxOverPositions(),
            )
            features = 64
        else:
            size = 1
            for s in event_shape:
                size *= s
            self.features = nn.Sequential(
                nn.Flatten(),
                nn.Linear(size, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
            )
            features = hidden
        self.head = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    @property
    def embedding_size(self) -> int:
        """The width of `embed`'s output."""
        return self.head[0].out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def embed(self, x: Tensor) -> Tensor:
        """The penultimate layer `[B, hidden]`: the activations the logits are a linear map
        of (the classifier's counterpart of Inception-v3's pool features, for FID)."""
        return self.head[:-1](self.features(x))


class _Transpose(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(1, 2)


class _MaxOverPositions(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.amax(-1)


@dataclass
class ClassifierCard:
    """What the JSON beside a classifier's weights records; `fits` decides reuse."""

    modality: str
    arch: str
    event_shape: list[int]
    num_classes: int
    hidden: int
    categorical: bool
    low: float
    high: float
    epochs: int
    seed: int
    fingerprint: str
    train_examples: int
    test_examples: int
    test_accuracy: float
    seconds: float
    format: str = FORMAT

    def fits(self, **expected: object) -> bool:
        """Whether a cached classifier was trained as `expected` (same data, network,
        epochs and seed) and can be reused."""
        return self.format == FORMAT and all(getattr(self, k) == v for k, v in expected.items())


@dataclass
class TrainedClassifier:
    """A classifier, its card, and how it reads generated values."""

    network: ModalityClassifier
    card: ClassifierCard

    @torch.no_grad()
    def predict(self, x: Tensor, generated: bool = False, batch_size: int = 1024) -> Tensor:
        """Class indices `[B]`. Generated values (decoder means) are first made to look like
        data: categorical probabilities become one-hot rows of their most likely symbol and
        other values are clipped to the training data's range."""
        if generated:
            x = self.as_data(x)
        self.network.eval()
        out = [
            self.network(x[i : i + batch_size].float()).argmax(-1)
            for i in range(0, x.shape[0], batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    @torch.no_grad()
    def features(self, x: Tensor, generated: bool = False, batch_size: int = 1024) -> Tensor:
        """Penultimate-layer activations `[B, hidden]` (`ModalityClassifier.embed`), with
        generated values read as in `predict`."""
        if generated:
            x = self.as_data(x)
        self.network.eval()
        out = [
            self.network.embed(x[i : i + batch_size].float())
            for i in range(0, x.shape[0], batch_size)
        ]
        if not out:
            return torch.zeros(0, self.network.embedding_size)
        return torch.cat(out)

    def as_data(self, x: Tensor) -> Tensor:
        if self.card.categorical:
            return F.one_hot(x.argmax(-1), x.shape[-1]).to(torch.float32)
        return x.clamp(self.card.low, self.card.high)

    @torch.no_grad()
    def accuracy(self, x: Tensor, labels: Tensor, generated: bool = False) -> float:
        if labels.numel() == 0:
            return float("nan")
        return float((self.predict(x, generated) == labels).double().mean())


def fingerprint(*tensors: Tensor) -> str:
    """A short hash of the data a classifier was trained and tested on (labels in full, the
    first rows of the inputs), so a cache is reused only for the same data."""
    digest = hashlib.sha256()
    for tensor in tensors:
        flat = tensor.detach().cpu().contiguous()
        digest.update(str(tuple(flat.shape)).encode())
        digest.update(flat[:256].numpy().tobytes())
    return digest.hexdigest()[:16]


def train_classifier(
    name: str,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    num_classes: int,
    categorical: bool = False,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 1e-3,
    hidden: int = HIDDEN,
    seed: int = 0,
) -> TrainedClassifier:
    """Train on `(x_train, y_train)` with Adam and cross-entropy; score on the test rows."""
    if x_train.shape[0] < 2:
        raise DataError(f"too few labelled training rows ({x_train.shape[0]}) for {name!r}")
    event_shape = tuple(x_train.shape[1:])
    arch = choose_architecture(event_shape)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = ModalityClassifier(event_shape, num_classes, arch, hidden)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    started = time.perf_counter()
    network.train()
    for _ in range(epochs):
        order = torch.randperm(x_train.shape[0], generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(network(x_train[index].float()), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    network.eval()
    card = ClassifierCard(
        modality=name,
        arch=arch,
        event_shape=list(event_shape),
        num_classes=num_classes,
        hidden=hidden,
        categorical=categorical,
        low=float(x_train.min()),
        high=float(x_train.max()),
        epochs=epochs,
        seed=seed,
        fingerprint=fingerprint(y_train, x_train, y_test, x_test),
        train_examples=int(x_train.shape[0]),
        test_examples=int(x_test.shape[0]),
        test_accuracy=float("nan"),
        seconds=time.perf_counter() - started,
    )
    trained = TrainedClassifier(network, card)
    card.test_accuracy = trained.accuracy(x_test, y_test)
    return trained


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "modality"


def save_classifier(classifier: TrainedClassifier, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stem = _file_stem(classifier.card.modality)
    save_model(classifier.network, str(directory / f"{stem}.safetensors"))
    (directory / f"{stem}.json").write_text(json.dumps(asdict(classifier.card), indent=1))
    return directory / f"{stem}.json"


def load_classifier(directory: Path, modality: str) -> TrainedClassifier | None:
    """The cached classifier of `modality`, or None when there is none."""
    stem = _file_stem(modality)
    card_path, weights = directory / f"{stem}.json", directory / f"{stem}.safetensors"
    if not card_path.is_file() or not weights.is_file():
        return None
    try:
        values: dict[str, Any] = json.loads(card_path.read_text())
        card = ClassifierCard(**values)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{card_path} is not a classifier card: {error}") from None
    network = ModalityClassifier(tuple(card.event_shape), card.num_classes, card.arch, card.hidden)
    try:
        load_model(network, str(weights))
    except Exception as error:  # safetensors raises several types for bad files
        raise CheckpointError(f"cannot load {weights}: {error}") from None
    network.eval()
    return TrainedClassifier(network, card)


def modality_is_categorical(model: MultiModalVAE, name: str) -> bool:
    """Whether the model's decoder for `name` outputs categorical probabilities."""
    return isinstance(model.modalities[name].likelihood, CategoricalLikelihood)


def classifiers_for(
    names: list[str],
    categorical: dict[str, bool],
    train_x: dict[str, Tensor],
    train_y: dict[str, Tensor],
    test_x: dict[str, Tensor],
    test_y: dict[str, Tensor],
    num_classes: int,
    cache: Path | None,
    epochs: int = 5,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, TrainedClassifier]:
    """A classifier per modality: reused from `cache` when its card matches the data and
    settings, trained (and written to `cache`) otherwise."""
    out = {}
    for name in names:
        expected = {
            "modality": name,
            "arch": choose_architecture(tuple(train_x[name].shape[1:])),
            "event_shape": list(train_x[name].shape[1:]),
            "num_classes": num_classes,
            "hidden": HIDDEN,
            "epochs": epochs,
            "seed": seed,
            "fingerprint": fingerprint(train_y[name], train_x[name], test_y[name], test_x[name]),
        }
        cached = load_classifier(cache, name) if cache is not None else None
        if cached is not None and cached.card.fits(**expected):
            out[name] = cached
            if log is not None:
                log(f"classifier {name}: reused from {cache}")
            continue
        trained = train_classifier(
            name,
            train_x[name],
            train_y[name],
            test_x[name],
            test_y[name],
            num_classes,
            categorical=categorical[name],
            epochs=epochs,
            seed=seed,
        )
        if log is not None:
            log(
                f"classifier {name}: {trained.card.arch}, test accuracy "
                f"{trained.card.test_accuracy:.3f} ({trained.card.seconds:.1f} s)"
            )
        if cache is not None:
            save_classifier(trained, cache)
        out[name] = trained
    return out
