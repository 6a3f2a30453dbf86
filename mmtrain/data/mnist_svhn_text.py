"""`mnist-svhn-text`: MNIST-SVHN-Text (Sutter et al. 2020, MoPoE; MNIST-SVHN from Shi et al.
2019, MMVAE) built from the real MNIST and SVHN through `datasets`: the data of arXiv
2309.00380's MNIST-SVHN-Text experiment, as docs/math.md §4.6 sets out.

The pairing is the reference one: both sets are sorted by label (stably, so "first" means
first in the source's order); for each digit the first n = min(#MNIST, #SVHN, max_per_class)
images of each set are kept, and `pairs_per_image` independent random permutations of the n
kept MNIST images are matched with as many of the n kept SVHN images, so every kept image of
either set appears exactly `pairs_per_image` times. MoPoE uses 20 (the default), MMVAE 30
and MultiVae 5; `max_per_class` is the references' cap of 10,000, which MNIST never reaches. The text is the digit's English word at a random position in a string of
`text_length` spaces, never touching the last character (MoPoE's placement), drawn once per
row from the seed so the data are fixed. Train and test are paired separately from the
sources' own splits. SVHN is the `cropped_digits` configuration (3×32×32); a label 10 (the
original `.mat` files' zero) reads as 0.

Hub names and local copies go through the same `datasets.load_dataset` call
(`mmtrain.data.labelled_images`); nothing is downloaded unless a Hub name is given.
"""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa

from mmtrain.data.config import ModalitySpec
from mmtrain.data.digits import WORDS, image_column, place_word, png
from mmtrain.data.embedded import (
    BuiltDataset,
    EmbeddedDataset,
    check_missing_rate,
    missing_mask,
    register_embedded,
    table_with_features,
)
from mmtrain.data.labelled_images import LabelledImages, load_labelled_images
from mmtrain.errors import ConfigError, DataError

MODALITIES = ("mnist", "svhn", "text")
SPLITS = ("train", "test")
SVHN_LICENCE = (
    "SVHN (Netzer et al. 2011) is released for non-commercial use only; so is any dataset "
    "built from it."
)


def pair_by_label(
    rng: np.random.RandomState,
    first_labels: np.ndarray,
    second_labels: np.ndarray,
    pairs_per_image: int,
    max_per_class: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs `(i, j)` with `first_labels[i] == second_labels[j]`, grouped by label: per
    label the first n = min(count in first, count in second, max_per_class) items of each set
    (in source order), matched by `pairs_per_image` pairs of random permutations."""
    first_sorted = np.argsort(first_labels, kind="stable")
    second_sorted = np.argsort(second_labels, kind="stable")
    first_out, second_out = [], []
    for label in np.unique(first_labels):
        first_kept = first_sorted[first_labels[first_sorted] == label]
        second_kept = second_sorted[second_labels[second_sorted] == label]
        n = min(len(first_kept), len(second_kept), max_per_class)
        first_kept, second_kept = first_kept[:n], second_kept[:n]
        for _ in range(pairs_per_image):
            first_out.append(first_kept[rng.permutation(n)])
            second_out.append(second_kept[rng.permutation(n)])
    if not first_out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(first_out), np.concatenate(second_out)


def mopoe_text(rng: np.random.RandomState, digit: int, length: int) -> str:
    """The digit's word at a random start in [0, length − 1 − len(word)] (MoPoE's range)."""
    return place_word(rng, WORDS[digit], length - 1) + " "


def _check_options(pairs_per_image: int, max_per_class: int, text_length: int, rate: float) -> None:
    if not isinstance(pairs_per_image, int) or pairs_per_image < 1:
        raise ConfigError(
            f"mnist-svhn-text option pairs_per_image must be a positive integer, got "
            f"{pairs_per_image!r}"
        )
    if not isinstance(max_per_class, int) or max_per_class < 1:
        raise ConfigError(
            f"mnist-svhn-text option max_per_class must be a positive integer, got "
            f"{max_per_class!r}"
        )
    longest = max(len(word) for word in WORDS) + 1
    if text_length < longest:
        raise ConfigError(f"mnist-svhn-text option text_length must be at least {longest}")
    check_missing_rate(rate)


def _both_splits(sets: dict[str, LabelledImages], source: str, what: str) -> None:
    missing = [s for s in SPLITS if s not in sets]
    if missing:
        raise DataError(
            f"{what} source {source!r} has no {missing[0]!r} split (it has "
            f"{', '.join(sets)}); mnist-svhn-text pairs the train and test splits separately"
        )


def build_mnist_svhn_text(
    mnist: str = "ylecun/mnist",
    svhn: str = "ufldl-stanford/svhn",
    svhn_config: str = "cropped_digits",
    pairs_per_image: int = 20,
    max_per_class: int = 10_000,
    text_length: int = 8,
    missing_rate: float = 0.0,
    seed: int = 0,
) -> BuiltDataset:
    """Train and test splits of (MNIST, SVHN, text) triples of the same digit, with `label`
    and the source rows `mnist_index` / `svhn_index`."""
    _check_options(pairs_per_image, max_per_class, text_length, missing_rate)
    mnist_sets = load_labelled_images(mnist, "MNIST", (28, 28))
    svhn_sets = load_labelled_images(svhn, "SVHN", (32, 32, 3), svhn_config, ten_means_zero=True)
    _both_splits(mnist_sets, mnist, "MNIST")
    _both_splits(svhn_sets, svhn, "SVHN")
    rng = np.random.RandomState(seed)
    features = datasets.Features(
        {
            "mnist": datasets.Image(),
            "svhn": datasets.Image(),
            "text": datasets.Value("string"),
            "label": datasets.Value("int64"),
            "mnist_index": datasets.Value("int64"),
            "svhn_index": datasets.Value("int64"),
        }
    )
    tables, kept = {}, {}
    for split in SPLITS:
        first, second = mnist_sets[split], svhn_sets[split]
        mnist_rows, svhn_rows = pair_by_label(
            rng, first.labels, second.labels, pairs_per_image, max_per_class
        )
        order = rng.permutation(len(mnist_rows))
        mnist_rows, svhn_rows = mnist_rows[order], svhn_rows[order]
        labels = first.labels[mnist_rows]
        texts = [mopoe_text(rng, int(d), text_length) for d in labels]
        avail = missing_mask(rng, len(labels), len(MODALITIES), missing_rate)
        mnist_png = pa.array([png(image) for image in first.pixels], pa.binary())
        svhn_png = pa.array([png(image) for image in second.pixels], pa.binary())
        columns = {
            "mnist": image_column(mnist_png.take(pa.array(mnist_rows)), avail[:, 0]),
            "svhn": image_column(svhn_png.take(pa.array(svhn_rows)), avail[:, 1]),
            "text": pa.array(texts, pa.string(), mask=~avail[:, 2]),
            "label": pa.array(labels, pa.int64()),
            "mnist_index": pa.array(mnist_rows, pa.int64()),
            "svhn_index": pa.array(svhn_rows, pa.int64()),
        }
        tables[split] = table_with_features(columns, features)
        kept[split] = {"mnist_images": len(first), "svhn_images": len(second)}
    modalities = {
        "mnist": ModalitySpec("mnist", "image", {"channels": 1, "height": 28, "width": 28}),
        "svhn": ModalitySpec("svhn", "image", {"channels": 3, "height": 32, "width": 32}),
        "text": ModalitySpec("text", "text", {"length": text_length}),
    }
    notes = [
        "Pairing as MMVAE / MoPoE / MultiVae: per digit the first min(#MNIST, #SVHN, "
        f"{max_per_class}) images of each set, matched by {pairs_per_image} random "
        "permutations (MoPoE 20, MMVAE 30, MultiVae 5).",
        "Text: the digit's English word in a string of spaces, drawn once per row (MoPoE "
        "draws it anew at every read).",
        "mnist_index / svhn_index are the source rows of each pair, within its split.",
    ]
    return BuiltDataset(
        tables,
        modalities,
        ("label",),
        f"MNIST from {mnist}; SVHN ({svhn_config}) from {svhn}; English digit words",
        {"licence": SVHN_LICENCE, "notes": notes, "sources": kept},
    )


register_embedded(
    EmbeddedDataset(
        "mnist-svhn-text",
        "MNIST-SVHN-Text (MoPoE): real MNIST, SVHN and the digit's word, paired by digit; "
        "reads MNIST and SVHN through datasets (Hub names or local copies)",
        build_mnist_svhn_text,
        shards=32,
    )
)
