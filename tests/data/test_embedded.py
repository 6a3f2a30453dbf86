"""Embedded datasets: generated once into the cache, deterministic, faithful to the
foundation's generators, and `digits` pairs real images of the same digit."""

from __future__ import annotations

import hashlib
import io
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from mmtrain import simulations
from mmtrain.data import DataConfig, build_loader, ensure_embedded, make_embedded
from mmtrain.data.digits import WORDS, load_sources
from mmtrain.data.embedded import read_card
from mmtrain.errors import ConfigError
from mmtrain.registry import MODALITIES

SMALL_IVAE = {"num_examples": 400, "condition_samples": 100}


def read_split(directory, split: str):
    card = read_card(directory)
    return pq.read_table([directory / f for f in card["splits"][split]["files"]])


def test_generated_once_then_cached(tmp_path):
    start = time.perf_counter()
    first = ensure_embedded("ivae-bimodal", {"num_examples": 200})
    card = first / "card.json"
    stamp = card.stat().st_mtime_ns
    assert time.perf_counter() - start < 10
    again = ensure_embedded("ivae-bimodal", {"num_examples": 200})
    assert again == first and card.stat().st_mtime_ns == stamp
    assert ensure_embedded("ivae-bimodal", {"num_examples": 250}) != first
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]


def test_generation_is_deterministic(tmp_path):
    for name, options in (
        ("ivae-multimodal", SMALL_IVAE),
        ("linear-gaussian", {"num_examples": 50}),
    ):
        make_embedded(name, tmp_path / f"{name}-a", options)
        make_embedded(name, tmp_path / f"{name}-b", options)
        for split in read_card(tmp_path / f"{name}-a")["splits"]:
            a = read_split(tmp_path / f"{name}-a", split)
            b = read_split(tmp_path / f"{name}-b", split)
            assert a.equals(b) and a.num_rows > 0


def test_unknown_option_lists_the_known_ones():
    with pytest.raises(ConfigError, match="did you mean 'num_examples'.*Known"):
        ensure_embedded("linear-gaussian", {"num_example": 5})


def test_ivae_multimodal_stores_the_generator_masks_as_nulls(tmp_path):
    make_embedded("ivae-multimodal", tmp_path, SMALL_IVAE)
    train, test = simulations.make_ivae_multimodal(num_examples=400, condition_samples=100, seed=2)
    for split, data in (("train", train), ("test", test)):
        table = read_split(tmp_path, split)
        for m, name in enumerate(data.x):
            column = table.column(name)
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            assert np.array_equal(valid, data.avail[:, m])
            values = np.array([row for row in column.to_pylist() if row is not None])
            assert np.array_equal(values, data.x[name][data.avail[:, m]])
        assert np.array_equal(table.column("segment").to_numpy(), data.segments)


def test_linear_gaussian_streams_the_generator_values():
    config = DataConfig(
        "linear-gaussian", options={"num_examples": 64}, shuffle=False, batch_size=64
    )
    batch = next(iter(build_loader(config)))
    data = simulations.make_linear_gaussian(num_examples=64)
    for i, x in enumerate(data.x):
        assert torch.equal(batch.x[f"x{i + 1}"], torch.as_tensor(x, dtype=torch.float32))
    assert torch.equal(batch.labels, torch.as_tensor(data.z, dtype=torch.float32))


@pytest.fixture(scope="module")
def digits_dir():
    return ensure_embedded("digits")


def _index_by_pixels(images: np.ndarray, labels: np.ndarray) -> dict[bytes, int]:
    return {
        hashlib.sha1(image.tobytes()).digest(): int(label) for image, label in zip(images, labels)
    }


def test_digits_pairs_real_images_of_the_same_digit(digits_dir):
    mnist, mnist_labels, small, small_labels = load_sources()
    mnist_index = _index_by_pixels(mnist, mnist_labels)
    small_index = _index_by_pixels(small, small_labels)
    card = read_card(digits_dir)
    assert card["splits"]["train"]["rows"] == 8000 and card["splits"]["test"]["rows"] == 2000
    seen = {}
    for split in ("train", "test"):
        table = read_split(digits_dir, split).slice(0, 1500)
        hashes = set()
        for mnist_cell, small_cell, text, label in zip(
            *(table.column(c).to_pylist() for c in ("mnist", "optdigits", "text", "label"))
        ):
            a = np.asarray(Image.open(io.BytesIO(mnist_cell["bytes"])))
            b = np.asarray(Image.open(io.BytesIO(small_cell["bytes"])))
            assert a.shape == (28, 28) and b.shape == (8, 8)
            key = hashlib.sha1(a.tobytes()).digest()
            assert mnist_index[key] == label
            assert small_index[hashlib.sha1(b.tobytes()).digest()] == label
            assert len(text) == 8 and text.strip() == WORDS[label]
            hashes.add(key)
        seen[split] = hashes
    assert not seen["train"] & seen["test"]


def test_digits_missing_rate_drops_cells_but_never_a_whole_row():
    directory = ensure_embedded("digits", {"pairings": 1, "missing_rate": 0.4})
    table = read_split(directory, "train")
    valid = np.stack(
        [
            table.column(c).is_valid().to_numpy(zero_copy_only=False)
            for c in ("mnist", "optdigits", "text")
        ],
        1,
    )
    assert valid.any(1).all()
    assert valid.mean() == pytest.approx(0.6, abs=0.02)


needs_plugins = pytest.mark.skipif(
    not {"image", "text", "label", "vector"} <= set(MODALITIES.names()),
    reason="the built-in image/text/label/vector plugins are not installed",
)


@needs_plugins
def test_digits_batches_through_the_real_plugins(digits_dir):
    loader = build_loader(DataConfig("digits", batch_size=32, num_workers=2))
    assert loader.modality_names == ["mnist", "optdigits", "text"]
    batch = next(iter(loader))
    assert batch.x["mnist"].shape == (32, 1, 28, 28)
    assert batch.x["optdigits"].shape == (32, 1, 8, 8)
    assert batch.x["text"].shape[:2] == (32, 8)
    assert batch.avail.shape == (32, 3) and batch.avail.all()
    assert 0 <= float(batch.x["mnist"].min()) and float(batch.x["mnist"].max()) <= 1
    plugin = loader.plugins["text"]
    for row, label in zip(batch.x["text"], batch.labels.tolist()):
        assert plugin.preview(row).strip() == WORDS[label]
    test = build_loader(DataConfig("digits", split="test", batch_size=500, shuffle=False))
    assert sum(b.size for b in test) == 2000


@needs_plugins
def test_ivae_sets_batch_through_the_real_plugins():
    loader = build_loader(DataConfig("ivae-bimodal", options={"num_examples": 200}, batch_size=50))
    batch = next(iter(loader))
    assert batch.x["u"].shape == (50, 1, 5) and batch.x["x"].shape == (50, 2)
    assert torch.equal(batch.x["u"][:, 0].argmax(-1), batch.labels)
    assert batch.extras["sources"].shape == (50, 2)
    multi = build_loader(
        DataConfig("ivae-multimodal", split="test", options=SMALL_IVAE, batch_size=200)
    )
    batches = list(multi)
    assert sum(b.size for b in batches) == 200
    avail = torch.cat([b.avail for b in batches])
    assert avail.shape == (200, 4) and avail.any(1).all()
    assert avail.float().mean().item() == pytest.approx(0.5, abs=0.05)
    x1 = torch.cat([b.x["x1"] for b in batches])
    assert x1.shape == (200, 25) and (x1[~avail[:, 0]] == 0).all()
