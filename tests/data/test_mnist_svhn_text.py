"""`mnist-svhn-text`: the reference pairing checked by brute-force counting on small local
copies of MNIST and SVHN written in the Hub's schema (every image unique, so each output cell
is traced back to its source row by its pixels)."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmtrain.cli import main
from mmtrain.data import DataConfig, build_loader
from mmtrain.data.digits import WORDS
from mmtrain.data.embedded import read_card
from mmtrain.data.labelled_images import load_labelled_images
from mmtrain.data.mnist_svhn_text import build_mnist_svhn_text
from mmtrain.errors import DataError
from mmtrain.registry import MODALITIES
from tests.data.helpers import write_hub_image_set, write_parquet

#: images per class in the local sources: SVHN has fewer of some digits, more of others and
#: no 9 in its test split
COUNTS = {
    ("mnist", "train"): [6, 5, 7, 4, 6, 5, 3, 6, 5, 4],
    ("svhn", "train"): [4, 8, 7, 6, 2, 5, 4, 9, 5, 3],
    ("mnist", "test"): [3, 2, 3, 2, 3, 2, 3, 2, 3, 2],
    ("svhn", "test"): [2, 4, 1, 3, 3, 2, 5, 2, 1, 0],
}


def fake_set(rng: np.random.RandomState, counts: list[int], shape: tuple[int, ...]):
    """Random (so all different) images with labels in a shuffled order."""
    labels = rng.permutation(np.repeat(np.arange(10), counts))
    return rng.randint(0, 256, size=(len(labels), *shape), dtype=np.uint8), labels


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    rng = np.random.RandomState(7)
    root = tmp_path_factory.mktemp("hub")
    sets = {}
    for (name, split), counts in COUNTS.items():
        shape = (28, 28) if name == "mnist" else (32, 32, 3)
        sets[name, split] = fake_set(rng, counts, shape)
    write_hub_image_set(
        root / "mnist", {s: sets["mnist", s] for s in ("train", "test")}, folder="mnist"
    )
    write_hub_image_set(
        root / "svhn", {s: sets["svhn", s] for s in ("train", "test")}, folder="cropped_digits"
    )
    # the other configuration of the Hub repository, which must not be read
    write_parquet(root / "svhn" / "full_numbers" / "train-00000-of-00001.parquet", {"x": [1]})
    return root, sets


def pixel_key(pixels: np.ndarray) -> bytes:
    return hashlib.sha1(np.ascontiguousarray(pixels).tobytes()).digest()


def decode(cell: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(cell["bytes"])))


def check_pairing(table, sets, split: str, pairs_per_image: int, max_per_class: int) -> None:
    """Brute force: trace every cell to its source row, then count."""
    (mnist_pixels, mnist_labels), (svhn_pixels, svhn_labels) = (
        sets["mnist", split],
        sets["svhn", split],
    )
    mnist_row = {pixel_key(p): i for i, p in enumerate(mnist_pixels)}
    svhn_row = {pixel_key(p): i for i, p in enumerate(svhn_pixels)}
    mnist_seen, svhn_seen, partners = Counter(), Counter(), {}
    columns = {c: table.column(c).to_pylist() for c in table.column_names}
    for r, label in enumerate(columns["label"]):
        m = mnist_row[pixel_key(decode(columns["mnist"][r]))]
        s = svhn_row[pixel_key(decode(columns["svhn"][r]))]
        assert mnist_labels[m] == svhn_labels[s] == label
        assert (columns["mnist_index"][r], columns["svhn_index"][r]) == (m, s)
        text = columns["text"][r]
        assert len(text) == 8 and text.strip() == WORDS[label] and text[-1] == " "
        mnist_seen[m] += 1
        svhn_seen[s] += 1
        partners.setdefault(m, set()).add(s)
    total = 0
    for digit in range(10):
        mnist_of = np.flatnonzero(mnist_labels == digit)
        svhn_of = np.flatnonzero(svhn_labels == digit)
        kept = min(len(mnist_of), len(svhn_of), max_per_class)
        total += kept
        assert {i for i in mnist_seen if mnist_labels[i] == digit} == set(mnist_of[:kept])
        assert {i for i in svhn_seen if svhn_labels[i] == digit} == set(svhn_of[:kept])
    assert set(mnist_seen.values()) == {pairs_per_image}
    assert set(svhn_seen.values()) == {pairs_per_image}
    assert table.num_rows == total * pairs_per_image
    # the rounds are independent permutations: images meet more than one partner
    assert np.mean([len(p) > 1 for p in partners.values()]) > 0.5


def test_pairing_matches_brute_force_counting(sources):
    root, sets = sources
    built = build_mnist_svhn_text(
        mnist=str(root / "mnist"), svhn=str(root / "svhn"), pairs_per_image=3
    )
    for split in ("train", "test"):
        check_pairing(built.tables[split], sets, split, 3, 10_000)
    assert built.tables["test"].num_rows == 3 * (2 + 2 + 1 + 2 + 3 + 2 + 3 + 2 + 1 + 0)
    capped = build_mnist_svhn_text(
        mnist=str(root / "mnist"), svhn=str(root / "svhn"), pairs_per_image=2, max_per_class=3
    )
    check_pairing(capped.tables["train"], sets, "train", 2, 3)


def test_seed_fixes_the_pairs_and_the_text(sources):
    root, _ = sources
    options = {"mnist": str(root / "mnist"), "svhn": str(root / "svhn"), "pairs_per_image": 2}
    first, again = build_mnist_svhn_text(**options), build_mnist_svhn_text(**options)
    other = build_mnist_svhn_text(**options, seed=5)
    assert first.tables["train"].equals(again.tables["train"])
    assert not first.tables["train"].equals(other.tables["train"])
    # MoPoE's placement: the word starts anywhere in [0, 8 − 1 − len(word)]
    starts = Counter(
        (t.strip(), len(t) - len(t.lstrip())) for t in first.tables["train"]["text"].to_pylist()
    )
    assert {start for (word, start) in starts if word == "three"} == {0, 1, 2}


@pytest.mark.skipif(
    not {"image", "text"} <= set(MODALITIES.names()),
    reason="the built-in image/text plugins are not installed",
)
def test_make_from_the_command_line_writes_a_directory_training_reads(sources, tmp_path):
    root, sets = sources
    out = tmp_path / "mst"
    args = ["data", "make", "mnist-svhn-text", "--out", str(out), "--shards", "3"]
    assert main([*args, "--mnist", str(root / "mnist"), "--svhn", str(root / "svhn")]) == 0
    card = json.loads((out / "card.json").read_text())
    assert "non-commercial" in card["licence"]
    assert card["options"]["pairs_per_image"] == 20
    assert list(card["modalities"]) == ["mnist", "svhn", "text"]
    test = pq.read_table([out / f for f in card["splits"]["test"]["files"]])
    check_pairing(test, sets, "test", 20, 10_000)
    loader = build_loader(DataConfig(str(out), split="test", batch_size=32, shuffle=False))
    batch = next(iter(loader))
    assert batch.x["mnist"].shape == (32, 1, 28, 28)
    assert batch.x["svhn"].shape == (32, 3, 32, 32)
    assert batch.x["text"].shape[:2] == (32, 8)
    assert batch.labels.tolist() == test.column("label").to_pylist()[:32]
    assert read_card(out)["label_columns"] == ["label"]


def test_source_errors_are_clear(sources, tmp_path):
    root, _ = sources
    with pytest.raises(DataError, match="cannot read SVHN from 'nobody/svhn'"):
        build_mnist_svhn_text(mnist=str(root / "mnist"), svhn="nobody/svhn")
    only_train = tmp_path / "only-train"
    pixels, labels = np.zeros((3, 28, 28), np.uint8), np.array([1, 2, 3])
    write_hub_image_set(only_train, {"train": (pixels, labels)})
    with pytest.raises(DataError, match="no 'test' split"):
        build_mnist_svhn_text(mnist=str(only_train), svhn=str(root / "svhn"))


def test_svhn_label_ten_reads_as_zero(tmp_path):
    """The original SVHN files mark the digit 0 as 10; such a copy reads as 0–9."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buffer, "PNG")
    cell = {"bytes": buffer.getvalue(), "path": None}
    write_parquet(tmp_path / "svhn" / "train.parquet", {"image": [cell] * 3, "label": [10, 3, 10]})
    loaded = load_labelled_images(str(tmp_path / "svhn"), "SVHN", (32, 32, 3), ten_means_zero=True)
    assert loaded["train"].labels.tolist() == [0, 3, 0]
    with pytest.raises(DataError, match="label 10 is not a digit"):
        load_labelled_images(str(tmp_path / "svhn"), "SVHN", (32, 32, 3))
