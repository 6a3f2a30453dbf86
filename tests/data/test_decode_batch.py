"""`decode_batch` of the built-in vector, label, text and image plugins: bit for bit what
stacking `decode_cell` gives; through the loader, bad cells fail or are skipped exactly as
when decoding cell by cell, and whole epochs deliver the same batches."""

from __future__ import annotations

import io
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from mmtrain.batch import Batch
from mmtrain.data import DataConfig, build_loader
from mmtrain.data.loader import batch_cells
from mmtrain.errors import DataError
from mmtrain.plugins.modalities.image import ImagePlugin, png_pixels
from mmtrain.plugins.modalities.label import LabelPlugin
from mmtrain.plugins.modalities.text import TextPlugin
from mmtrain.plugins.modalities.vector import VectorPlugin
from mmtrain.testing import per_cell_decoding
from tests.data.helpers import write_parquet

BATCHED = {"vector": VectorPlugin, "label": LabelPlugin, "text": TextPlugin, "image": ImagePlugin}


@pytest.fixture
def batch_calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts `decode_batch` calls per kind (the loader really takes the whole-chunk path)."""
    calls: Counter = Counter()
    for kind, cls in BATCHED.items():

        def counted(self, cells, _original=cls.decode_batch, _kind=kind):
            calls[_kind] += 1
            return _original(self, cells)

        monkeypatch.setattr(cls, "decode_batch", counted)
    return calls


def assert_same_bits(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.contiguous().numpy().tobytes() == b.contiguous().numpy().tobytes()


def check_equal(plugin, cells) -> torch.Tensor:
    """`decode_batch(cells)` equals `decode_cell` stacked over the cells, bit for bit."""
    batch = plugin.decode_batch(cells)
    reference = torch.stack([plugin.decode_cell(cell) for cell in cells])
    assert_same_bits(batch, reference)
    assert batch.dtype == plugin.dtype and batch.shape == (len(cells), *plugin.event_shape)
    return batch


def check_same_error(plugin, cells, bad: int) -> None:
    """With one bad cell `bad`, decode_batch raises decode_cell's error for it."""
    with pytest.raises(DataError) as expected:
        plugin.decode_cell(cells[bad])
    with pytest.raises(DataError) as got:
        plugin.decode_batch(cells)
    assert str(got.value) == str(expected.value)


# ---- vector ----


def test_vector_batches_equal_stacked_cells():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 6)) * 1e3
    vector = VectorPlugin(shape=(6,))
    check_equal(vector, values)
    check_equal(vector, values.astype(np.float32))
    check_equal(vector, list(values))
    check_equal(vector, batch_cells(pa.array(list(values)), np.arange(3, 30)))
    big = rng.integers(-(2**62), 2**62, size=(20, 6))
    big[3, 2] = 2**60 + 2**36 + 1  # rounds differently straight to float32 than via float64
    check_equal(vector, big)
    check_equal(vector, list(big))
    check_equal(vector, values.reshape(40, 2, 3))
    check_equal(VectorPlugin(shape=(2, 3)), values)
    check_equal(VectorPlugin(shape=(1,)), [1.5, -2, 3, 2**60 + 1, True])
    check_equal(vector, [torch.ones(6), [1, 2, 3, 4, 5, 6], np.zeros((2, 3))])


def test_vector_categorical_and_bernoulli_batches_equal_stacked_cells():
    rng = np.random.default_rng(1)
    onehot = np.eye(4)[rng.integers(0, 4, size=(30, 3))]
    check_equal(VectorPlugin(shape=(3, 4), likelihood="categorical"), onehot)
    check_equal(VectorPlugin(shape=(5,), likelihood="bernoulli"), rng.uniform(size=(30, 5)))


@pytest.mark.parametrize(
    ("options", "bad_cell"),
    [
        ({}, [1.0, float("nan"), 0.0]),
        ({}, [1.0, float("inf"), 0.0]),
        ({}, [1.0, 2.0]),
        ({}, "abc"),
        ({}, None),
        ({"likelihood": "bernoulli"}, [0.5, 1.5, 0.0]),
        ({"shape": (1, 3), "likelihood": "categorical"}, [0.0, 1.0, 1.0]),
    ],
)
def test_vector_bad_cell_gives_the_cell_error(options, bad_cell):
    plugin = VectorPlugin(**{"shape": (3,), **options})
    good = [0.0, 1.0, 0.0]
    check_same_error(plugin, [good, bad_cell, good], 1)
    if isinstance(bad_cell, list) and len(bad_cell) == 3:
        check_same_error(plugin, np.array([good, bad_cell, good]), 1)


# ---- label ----


def test_label_batches_equal_stacked_cells():
    check_equal(LabelPlugin(num_classes=5), [0, 4, 2, 2, 1, 3])
    check_equal(LabelPlugin(num_classes=5), [0, 4.0, np.int64(2), np.float32(3), "1"])
    named = LabelPlugin(class_names=("cat", "dog", "bird"))
    check_equal(named, ["dog", "bird", "cat", "cat"])
    check_equal(named, ["dog", 2, 0.0])


@pytest.mark.parametrize("bad_cell", [5, -1, 1.5, True, "seven", None, [1]])
def test_label_bad_cell_gives_the_cell_error(bad_cell):
    check_same_error(LabelPlugin(num_classes=5), [0, 1, bad_cell, 3], 2)
    named = LabelPlugin(class_names=("cat", "dog"))
    check_same_error(named, ["cat", "dgo" if bad_cell == "seven" else bad_cell], 1)


# ---- text ----


@pytest.mark.parametrize("unknown", ["error", "map"])
def test_text_batches_equal_stacked_cells(unknown):
    text = TextPlugin(length=8, unknown=unknown)
    check_equal(text, ["one", "  two   ", "Three", "", "eight!?", b"nine"])
    if unknown == "map":
        check_equal(text, ["tw#o", "é", "~~~~~~~~"])
    cased = TextPlugin(length=4, alphabet="abAB ", lowercase=False, unknown=unknown)
    check_equal(cased, ["aB", "BBAA", "ab"] + (["xy"] if unknown == "map" else []))
    check_equal(TextPlugin(length=3, too_long="truncate", unknown=unknown), ["abcdef", "ab"])


@pytest.mark.parametrize(
    ("options", "bad_cell"),
    [
        ({}, "nine and more"),
        ({}, "tw#o"),
        ({}, 7),
        ({}, None),
        ({}, b"\xff\xfe"),
        ({"unknown": "map"}, "much too long"),
    ],
)
def test_text_bad_cell_gives_the_cell_error(options, bad_cell):
    check_same_error(TextPlugin(length=8, **options), ["one", bad_cell, "two"], 1)


# ---- image ----

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def encode_png(
    pixels: np.ndarray, filters: list[int], idat_parts: int = 1, extra: bytes = b""
) -> bytes:
    """An 8-bit PNG of `pixels` ([H, W] grey, [H, W, 3] RGB, [H, W, 4] RGBA) whose row r
    uses filter `filters[r]` (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth)."""
    height, width = pixels.shape[:2]
    bpp = 1 if pixels.ndim == 2 else pixels.shape[2]
    colour = {1: 0, 3: 2, 4: 6}[bpp]
    rows = pixels.reshape(height, width * bpp).astype(np.int64)
    lines = []
    for r in range(height):
        x = rows[r]
        up = rows[r - 1] if r else np.zeros_like(x)
        left = np.concatenate([np.zeros(bpp, np.int64), x[:-bpp]])
        corner = np.concatenate([np.zeros(bpp, np.int64), up[:-bpp]])
        predict = [0, left, up, (left + up) // 2, paeth(left, up, corner)][filters[r]]
        lines.append(bytes([filters[r]]) + ((x - predict) % 256).astype(np.uint8).tobytes())
    data = zlib.compress(b"".join(lines), 6)
    cut = np.linspace(0, len(data), idat_parts + 1).astype(int)
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + extra
        + b"".join(png_chunk(b"IDAT", data[cut[i] : cut[i + 1]]) for i in range(idat_parts))
        + png_chunk(b"IEND", b"")
    )


def pil_png(array: np.ndarray, mode: str | None = None, **save: object) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, "PNG", **save)
    return buffer.getvalue()


def pillow_pixels(data: bytes, channels: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert({1: "L", 3: "RGB", 4: "RGBA"}[channels]))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_pixels_unpacks_every_filter_like_pillow(channels):
    rng = np.random.default_rng(channels)
    shape = (9, 7) if channels == 1 else (9, 7, channels)
    images = [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(12)]
    images[0][:] = 0
    images[1][:] = 255
    datas, first_filters = [], []
    for i, image in enumerate(images):
        filters = [(i + r) % 5 for r in range(9)] if i < 10 else rng.integers(0, 5, 9).tolist()
        datas.append(encode_png(image, filters, idat_parts=1 + i % 3))
        first_filters.append(filters[0])
        assert np.array_equal(pillow_pixels(datas[-1], channels), image)
    datas.append(pil_png(images[2]))
    first_filters.append(None)
    unpacked = png_pixels(datas, channels, 9, 7)
    for data, pixels, first in zip(datas, unpacked, first_filters):
        if first == 3:  # Average in the first row: left to Pillow
            assert pixels is None
        else:
            assert pixels is not None and pixels.dtype == np.uint8
            assert np.array_equal(pixels, pillow_pixels(data, channels))
    plugin = ImagePlugin(channels=channels, height=9, width=7)
    check_equal(plugin, [{"bytes": d, "path": None} for d in datas])
    check_equal(plugin, datas)


def test_png_pixels_leaves_other_pngs_to_pillow():
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, size=(6, 6), dtype=np.uint8)
    plain = encode_png(grey, [4] * 6)
    text = png_chunk(b"tEXt", b"key\x00value")
    broken_crc = bytearray(plain)
    broken_crc[-20] ^= 1
    others = [
        encode_png(grey, [0] * 6, extra=text),
        pil_png(grey, dpi=(72, 72)),
        pil_png(grey, "P"),
        pil_png(grey, "LA"),
        pil_png(grey.astype(np.uint16) * 257),
        encode_png(rng.integers(0, 256, size=(6, 5), dtype=np.uint8), [0] * 6),
        encode_png(np.stack([grey] * 3, -1), [0] * 6),
        bytes(broken_crc),
        plain[:-30],
        plain + b"trailing",
        b"not a png at all",
        None,
    ]
    unpacked = png_pixels([plain, *others], 1, 6, 6)
    assert np.array_equal(unpacked[0], pillow_pixels(plain, 1))
    assert all(p is None for p in unpacked[1:])


def test_image_batches_equal_stacked_cells():
    rng = np.random.default_rng(7)
    grey = [rng.integers(0, 256, size=(12, 10), dtype=np.uint8) for _ in range(6)]
    rgb = [rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8) for _ in range(6)]
    gray_plugin = ImagePlugin(channels=1, height=12, width=10)
    rgb_plugin = ImagePlugin(channels=3, height=12, width=10)
    hf = [{"bytes": pil_png(g), "path": None} for g in grey]
    check_equal(gray_plugin, hf)
    check_equal(gray_plugin, [Image.fromarray(g) for g in grey])
    check_equal(gray_plugin, grey)
    check_equal(gray_plugin, [g[None] for g in grey])
    check_equal(gray_plugin, [g.astype(np.int64) for g in grey])
    check_equal(gray_plugin, [g / 255.0 for g in grey])
    check_equal(gray_plugin, [(g / 255.0).astype(np.float16) for g in grey])
    check_equal(gray_plugin, [g > 127 for g in grey])
    check_equal(gray_plugin, [torch.from_numpy(g) for g in grey])
    check_equal(gray_plugin, [g.tolist() for g in grey])
    check_equal(gray_plugin, [pil_png(r) for r in rgb])
    jpeg = io.BytesIO()
    Image.fromarray(grey[0]).save(jpeg, "JPEG")
    mixed = [hf[0], Image.fromarray(rgb[1]), grey[2], jpeg.getvalue(), {"bytes": pil_png(rgb[3])}]
    check_equal(gray_plugin, mixed)
    check_equal(rgb_plugin, [{"bytes": pil_png(r), "path": None} for r in rgb])
    check_equal(rgb_plugin, rgb)
    check_equal(rgb_plugin, [r.transpose(2, 0, 1) for r in rgb])
    check_equal(rgb_plugin, [r / 255.0 for r in rgb])
    check_equal(rgb_plugin, [{"bytes": pil_png(g), "path": None} for g in grey])
    check_equal(ImagePlugin(channels=4, height=12, width=10), [pil_png(r, "RGBA") for r in rgb])
    square = ImagePlugin(channels=3, height=3, width=3)
    check_equal(square, [rng.uniform(size=(3, 3, 3)) for _ in range(4)])
    resized = ImagePlugin(channels=1, height=6, width=5, resize=True)
    check_equal(resized, hf + grey)


def test_image_cells_from_files_equal_stacked_cells(tmp_path: Path):
    rng = np.random.default_rng(8)
    cells = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        path.write_bytes(pil_png(rng.integers(0, 256, size=(5, 5), dtype=np.uint8)))
        cells.append({"bytes": None, "path": str(path)})
    check_equal(ImagePlugin(channels=1, height=5, width=5), cells)


@pytest.mark.parametrize(
    "bad_cell",
    [
        {"bytes": b"\x89PNG\r\n\x1a\n garbage", "path": None},
        {"bytes": None, "path": None},
        {"bytes": None, "path": "/nonexistent/image.png"},
        "image.png",
        np.zeros((5, 4), dtype=np.uint8),
        np.full((6, 6), 300, dtype=np.int64),
        np.full((6, 6), np.nan),
        np.full((6, 6), 1.5),
        np.full((6, 6), -17 * 2.0**-24, dtype=np.float16),  # below -1e-6, not in float16
        np.zeros((2, 6, 6)),
    ],
)
def test_image_bad_cell_gives_the_cell_error(bad_cell):
    rng = np.random.default_rng(9)
    good = {"bytes": pil_png(rng.integers(0, 256, size=(6, 6), dtype=np.uint8)), "path": None}
    plugin = ImagePlugin(channels=1, height=6, width=6)
    check_same_error(plugin, [good, bad_cell, good], 1)
    if isinstance(bad_cell, np.ndarray):
        like = np.zeros_like(bad_cell)
        check_same_error(plugin, [like, bad_cell, like], 1)


def test_subclass_that_changes_decode_cell_keeps_its_cells():
    class Doubled(VectorPlugin):
        def decode_cell(self, cell: object) -> torch.Tensor:
            return super().decode_cell(cell) * 2

    plugin = Doubled(shape=(2,))
    assert torch.equal(plugin.decode_batch(np.ones((3, 2))), torch.full((3, 2), 2.0))

    class Shifted(LabelPlugin):
        def index(self, cell: object) -> int:
            return (super().index(cell) + 1) % 3

    check_equal(Shifted(num_classes=3), [0, 1, 2, 2])


def test_empty_chunk_gives_an_empty_batch():
    plugins = [
        VectorPlugin(shape=(2, 3)),
        LabelPlugin(num_classes=3),
        TextPlugin(length=4),
        ImagePlugin(channels=3, height=4, width=5),
    ]
    for plugin in plugins:
        out = plugin.decode_batch([])
        assert out.shape == (0, *plugin.event_shape) and out.dtype == plugin.dtype


# ---- through the loader ----

MODALITIES_CONFIG = {
    "v": {"kind": "vector", "options": {"shape": [3]}},
    "u": {"kind": "label", "options": {"class_names": ["a", "b", "c", "d"]}},
    "t": {"kind": "text", "options": {"length": 6}},
    "img": {"kind": "image", "options": {"channels": 1, "height": 5, "width": 5}},
}
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("v", pa.list_(pa.float64())),
        ("u", pa.string()),
        ("t", pa.string()),
        ("img", IMAGE_TYPE),
    ]
)


def mixed_rows(n: int, start: int) -> dict[str, list]:
    """Rows of every built-in kind, with null cells here and there."""
    rng = np.random.default_rng(start)
    ids = list(range(start, start + n))
    images = [rng.integers(0, 256, size=(5, 5), dtype=np.uint8) for _ in ids]
    return {
        "id": ids,
        "v": [None if i % 7 == 3 else rng.normal(size=3).tolist() for i in ids],
        "u": [None if i % 11 == 5 else "abcd"[i % 4] for i in ids],
        "t": [None if i % 5 == 1 else ["one", "two", "three", "four"][i % 4] for i in ids],
        "img": [
            None if i % 6 == 2 else {"bytes": pil_png(im), "path": None}
            for i, im in zip(ids, images)
        ],
    }


def mixed_dataset(
    root: Path, column: str | None = None, row: int = 0, value: object = None
) -> Path:
    """Three files of 40 rows; the middle one's `column` holds `value` at `row` if given."""
    for part in range(3):
        rows = mixed_rows(40, 40 * part)
        if part == 1 and column is not None:
            rows[column][row] = value
        write_parquet(root / f"part-{part}.parquet", rows, SCHEMA)
    return root


def mixed_config(root: Path, **overrides: object) -> DataConfig:
    values: dict[str, object] = {
        "source": str(root),
        "modalities": MODALITIES_CONFIG,
        "label_columns": ["id"],
        "batch_size": 16,
        "read_rows": 32,
        "shuffle_buffer": 64,
        "presence_check_rows": 1000,
        "persistent_workers": False,
    }
    values.update(overrides)
    return DataConfig.from_dict(values)


def run_epoch(config: DataConfig, epoch: int = 0) -> tuple[list[Batch], int, list[str]] | str:
    """The batches, skipped rows and bad-row notes of one epoch, or the DataError's text."""
    try:
        loader = build_loader(config)
        loader.set_epoch(epoch)
        batches = list(loader)
    except DataError as error:
        return str(error)
    return batches, loader.stats.skipped_rows, list(loader.stats.bad_rows)


def assert_same_batches(got: list[Batch], expected: list[Batch]) -> None:
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        assert a.x.keys() == b.x.keys()
        for name in a.x:
            assert_same_bits(a.x[name], b.x[name])
        assert torch.equal(a.avail, b.avail)
        assert torch.equal(a.labels, b.labels)
        assert a.extras.keys() == b.extras.keys()
        for name in a.extras:
            assert_same_bits(a.extras[name], b.extras[name])


def compare_with_per_cell(config: DataConfig, epoch: int = 0):
    batched = run_epoch(config, epoch)
    with per_cell_decoding(list(BATCHED)):
        per_cell = run_epoch(config, epoch)
    if isinstance(per_cell, str):
        assert batched == per_cell
        return per_cell
    assert not isinstance(batched, str), batched
    assert_same_batches(batched[0], per_cell[0])
    assert batched[1:] == per_cell[1:]
    return batched


def test_loader_batches_equal_per_cell_decoding(tmp_path, batch_calls):
    root = mixed_dataset(tmp_path / "ds")
    batches, skipped, _ = compare_with_per_cell(mixed_config(root))
    assert skipped == 0 and sum(b.size for b in batches) == 120
    avail = torch.cat([b.avail for b in batches])
    ids = torch.cat([b.labels for b in batches])
    assert (avail[:, 0] == (ids % 7 != 3)).all() and (avail[:, 3] == (ids % 6 != 2)).all()
    assert set(batch_calls) == {"vector", "label", "text", "image"}


BAD_CELLS = [
    ("v", [1.0, float("nan"), 2.0], "NaN"),
    ("v", [1.0, 2.0], "expected 3 values"),
    ("v", [1e39, 0.0, 0.0], "NaN or infinite"),
    ("u", "e", "unknown class name"),
    ("t", "seventeen", "more than length"),
    ("t", "tw#", "outside the alphabet"),
    ("img", {"bytes": b"\x89PNG\r\n\x1a\nbroken", "path": None}, "cannot decode"),
    ("img", {"bytes": pil_png(np.zeros((4, 5), dtype=np.uint8)), "path": None}, "5×5"),
]


@pytest.mark.parametrize(("column", "value", "problem"), BAD_CELLS)
def test_bad_cell_fails_like_per_cell_decoding(tmp_path, column, value, problem, batch_calls):
    root = mixed_dataset(tmp_path / "ds", column, 13, value)
    message = compare_with_per_cell(mixed_config(root))
    assert isinstance(message, str), "a bad cell must fail the epoch"
    assert "part-1.parquet, row 13" in message and f"column {column!r}" in message
    assert problem in message
    assert batch_calls


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_mode_skips_the_rows_per_cell_decoding_skips(tmp_path, workers):
    root = tmp_path / "ds"
    for part in range(3):
        rows = mixed_rows(40, 40 * part)
        if part == 1:
            for row, (column, value, _) in zip((1, 5, 9, 13, 20, 27, 33, 39), BAD_CELLS):
                rows[column][row] = value
        write_parquet(root / f"part-{part}.parquet", rows, SCHEMA)
    config = mixed_config(root, on_bad_row="skip", num_workers=workers)
    batches, skipped, notes = compare_with_per_cell(config, epoch=1)
    assert skipped == len(BAD_CELLS) and notes
    ids = sorted(i for b in batches for i in b.labels.tolist())
    assert ids == sorted(set(range(120)) - {41, 45, 49, 53, 60, 67, 73, 79})


@pytest.fixture(scope="module")
def embedded_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("mmtrain-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMTRAIN_HOME", str(home))
        yield home


@pytest.mark.parametrize(
    ("name", "options", "split"),
    [
        ("digits", {"pairings": 1, "missing_rate": 0.3}, "test"),
        ("ivae-bimodal", {"num_examples": 300}, "train"),
        ("linear-gaussian", {"num_examples": 300}, "train"),
    ],
)
def test_embedded_epoch_equals_per_cell_decoding(embedded_home, name, options, split, batch_calls):
    config = DataConfig(name, split=split, options=options, batch_size=64)
    batches, skipped, _ = compare_with_per_cell(config, epoch=1)
    assert skipped == 0 and batch_calls
    if name == "digits":
        avail = torch.cat([b.avail for b in batches])
        assert 0 < avail.float().mean() < 1
