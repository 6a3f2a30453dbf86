"""`mmtrain data inspect`: what a source holds, read through the same streaming path as
training — schema, rows where known, how often each column / modality is present in the
first rows, a PNG grid of the image columns and sample text."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
from PIL import Image

from mmtrain.data.config import DataConfig, ModalitySpec
from mmtrain.data.loader import load_base, read_error
from mmtrain.data.sources import Source, resolve_source

GRID_IMAGES = 16
GRID_CELL = 56
SAMPLE_TEXTS = 5


@dataclass
class Inspection:
    """The findings of `inspect_source`."""

    source: Source
    features: datasets.Features
    rows: int | None
    rows_read: int
    presence: dict[str, float]
    modalities: dict[str, ModalitySpec]
    texts: dict[str, list[str]] = field(default_factory=dict)
    image_columns: list[str] = field(default_factory=list)
    grid: Path | None = None

    def report(self) -> str:
        """The human-readable report the CLI prints."""
        s = self.source
        lines = [f"source:  {s.name} ({s.kind}{', ' + s.format if s.format else ''})"]
        lines.append(f"split:   {s.split}")
        if s.files:
            shown = ", ".join(Path(f).name for f in s.files[:4])
            more = f", … ({len(s.files)} files)" if len(s.files) > 4 else ""
            lines.append(f"files:   {shown}{more} in {Path(s.files[0]).parent}")
        lines.append(f"rows:    {self.rows if self.rows is not None else 'unknown (streaming)'}")
        lines.append("schema:")
        for name, feature in self.features.items():
            lines.append(f"  {name}: {_describe(feature)}")
        scope = f"first {self.rows_read} rows" if self.rows != self.rows_read else "all rows"
        lines.append(f"present ({scope}):")
        by_column = {spec.column: name for name, spec in self.modalities.items()}
        for column, rate in self.presence.items():
            tag = f"  [modality {by_column[column]}]" if column in by_column else ""
            lines.append(f"  {column}: {rate:.1%}{tag}")
        for column, texts in self.texts.items():
            lines.append(f"text samples ({column}):")
            lines += [f"  {text!r}" for text in texts]
        if self.grid is not None:
            lines.append(
                f"image grid (one row per column: {', '.join(self.image_columns)}; one column "
                f"per example; gray = missing): {self.grid}"
            )
        return "\n".join(lines)


def inspect_source(
    source: str,
    split: str = "train",
    rows: int = 1000,
    out: Path | str | None = None,
    **config: object,
) -> Inspection:
    """Inspect `source` (any `DataConfig.source`); write the image grid to `out` (default
    `inspect-<name>-<split>.png` in the current directory) when there are image columns."""
    data = DataConfig(source=source, split=split, **config)  # type: ignore[arg-type]
    resolved = resolve_source(data)
    modalities = data.modalities or resolved.default_modalities()
    base = load_base(resolved)
    features = base.features
    counts = dict.fromkeys(features, 0)
    texts: dict[str, list[str]] = {}
    images: dict[str, list[object]] = {}
    image_columns = [
        c
        for c, f in features.items()
        if isinstance(f, datasets.Image)
        or any(s.column == c and s.kind == "image" for s in modalities.values())
    ]
    text_columns = [
        c
        for c, f in features.items()
        if isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")
    ]
    seen = 0
    try:
        for table in base.with_format("arrow").iter(batch_size=min(rows, 4096)):
            table = table.slice(0, rows - seen)
            for column in features:
                array = table.column(column)
                counts[column] += len(array) - array.null_count
            for column in text_columns:
                kept = texts.setdefault(column, [])
                kept += [t for t in table.column(column).to_pylist() if t is not None][
                    : SAMPLE_TEXTS - len(kept)
                ]
            for column in image_columns:
                kept = images.setdefault(column, [])
                wanted = GRID_IMAGES - len(kept)
                kept += table.column(column).slice(0, max(wanted, 0)).to_pylist()
            seen += table.num_rows
            if seen >= rows:
                break
    except (OSError, pa.ArrowException) as error:
        raise read_error(resolved, error) from None
    presence = {c: n / seen if seen else 0.0 for c, n in counts.items()}
    grid = None
    if any(c is not None for cells in images.values() for c in cells):
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(source).name)
        grid = Path(out) if out is not None else Path.cwd() / f"inspect-{safe}-{split}.png"
        image_grid(images).save(grid)
    return Inspection(
        resolved,
        features,
        resolved.known_rows(),
        seen,
        presence,
        modalities,
        texts,
        [c for c in image_columns if any(x is not None for x in images.get(c, []))],
        grid,
    )


def image_grid(columns: dict[str, list[object]]) -> Image.Image:
    """One row per image column and one column per dataset row (so an example's images line
    up), scaled to a common cell; a missing or undecodable cell is left gray."""
    rows = [(name, cells) for name, cells in columns.items() if cells]
    width = max(len(cells) for _, cells in rows) * (GRID_CELL + 2)
    canvas = Image.new("RGB", (width, len(rows) * (GRID_CELL + 2)), "white")
    blank = Image.new("RGB", (GRID_CELL, GRID_CELL), (128, 128, 128))
    for r, (_, cells) in enumerate(rows):
        for c, cell in enumerate(cells):
            image = _to_image(cell)
            if image is None:
                canvas.paste(blank, (c * (GRID_CELL + 2) + 1, r * (GRID_CELL + 2) + 1))
                continue
            scale = GRID_CELL / max(image.size)
            size = (
                max(1, math.floor(image.width * scale)),
                max(1, math.floor(image.height * scale)),
            )
            image = image.convert("RGB").resize(size, Image.NEAREST)
            canvas.paste(image, (c * (GRID_CELL + 2) + 1, r * (GRID_CELL + 2) + 1))
    return canvas


def _to_image(cell: object) -> Image.Image | None:
    if isinstance(cell, dict):
        data = cell.get("bytes")
        if data is None and cell.get("path"):
            try:
                data = Path(cell["path"]).read_bytes()
            except OSError:
                return None
        cell = data
    if isinstance(cell, bytes):
        try:
            image = Image.open(io.BytesIO(cell))
            image.load()
            return image
        except Exception:  # noqa: BLE001 - any undecodable cell is just left blank
            return None
    if isinstance(cell, list):
        array = np.asarray(cell, dtype=np.float32)
        if array.ndim == 3 and array.shape[0] in (1, 3):
            array = array.transpose(1, 2, 0)
        if array.max() <= 1.0:
            array = array * 255
        return Image.fromarray(array.squeeze().clip(0, 255).astype(np.uint8))
    return None


def _describe(feature: object) -> str:
    if isinstance(feature, datasets.Value):
        return feature.dtype
    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, datasets.List):
        return f"list<{_describe(feature.feature)}>"
    return repr(feature)
