"""Pictures of a trained model (PNG, matplotlib with the Agg backend and PIL).

Every modality is drawn one of three ways, chosen from its event shape and likelihood:
images `[C, H, W]` as pixels, categorical modalities (text, labels) as their string drawn in
a monospace font, and other vectors as a 2-D scatter (the first two principal axes of the
data when they have more than two dimensions) over many rows, coloured by label. Strips of
examples line up across a figure's rows: column k of every strip is the same example (or
the same prior draw).
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from torch import Tensor  # noqa: E402

from mmtrain.batch import Batch  # noqa: E402
from mmtrain.evaluation.coherence import decoder_means  # noqa: E402
from mmtrain.evaluation.probe import posterior_means  # noqa: E402
from mmtrain.evaluation.subsets import Subset  # noqa: E402
from mmtrain.likelihoods import CategoricalLikelihood  # noqa: E402
from mmtrain.model import MultiModalVAE  # noqa: E402

#: pixel height of one example in a strip
TILE = 64
GAP = 6
DPI = 110
CROSS_COLOUR = "#1f77b4"
RECON_COLOUR = "#9a9a9a"
DATA_COLOUR = "#222222"
MISSING_GREY = 0.86


# ----------------------------------------------------------------------------- rendering


def modality_style(model: MultiModalVAE, name: str) -> str:
    """`image`, `text` or `scatter`: how the modality is drawn."""
    modality = model.modalities[name]
    shape = tuple(modality.event_shape)
    if len(shape) == 3 and shape[0] in (1, 3, 4) and min(shape[1:]) >= 4:
        return "image"
    if isinstance(modality.likelihood, CategoricalLikelihood):
        return "text"
    return "scatter"


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSansMono.ttf"
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default()


def image_tile(x: Tensor, height: int = TILE) -> np.ndarray:
    """One image `[C, H, W]` as RGB floats `[height, ·, 3]` (nearest-neighbour scaling)."""
    x = x.detach().float().cpu().clamp(0, 1).nan_to_num(0.0)
    pixels = x[:3].permute(1, 2, 0).numpy() if x.shape[0] >= 3 else x[0].numpy()[..., None]
    rgb = np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    image = Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")
    return np.asarray(image.resize((width, height), Image.NEAREST), dtype=np.float32) / 255.0


BACKGROUND = (243, 243, 246)
INK = (20, 20, 20)


def text_tile(
    text: str, chars: int, height: int = TILE, strength: Sequence[float] | None = None
) -> np.ndarray:
    """`text` in a monospace font on a light box `chars` characters wide, as RGB floats.

    `strength` (one value in [0, 1] per character of a one-line `text`, the decoder's
    probability of that symbol) fades each character towards the background: ink
    strength^0.7, a little darker than linear so that likely symbols read clearly."""
    lines = text.split("\n") or [""]
    size = max(8, min(22, int(height / (1.35 * max(1, len(lines))))))
    font = _font(size)
    char_width = max(1, round(font.getlength("M")))
    width = char_width * chars + 8
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    total = len(lines) * size * 1.25
    top = (height - total) / 2
    if strength is not None and len(lines) == 1:
        for i, (char, weight) in enumerate(zip(text, strength)):
            w = float(np.clip(weight, 0.0, 1.0)) ** 0.7
            colour = tuple(round(b + w * (k - b)) for b, k in zip(BACKGROUND, INK))
            draw.text((4 + i * char_width, top), char, fill=colour, font=font)
    else:
        for i, line in enumerate(lines):
            draw.text((4, top + i * size * 1.25), line, fill=INK, font=font)
    return np.asarray(image, dtype=np.float32) / 255.0


def text_glyphs(model: MultiModalVAE, name: str, x: Tensor) -> tuple[str, list[float]] | None:
    """For a text modality (a plugin with `alphabet`, `pad` and `to_text`): per position
    the most likely symbol other than padding and its probability, so that an uncertain
    decoder shows faint letters instead of the padding it mostly predicts. Positions whose
    best symbol has probability under 0.1 are left blank. None for other modalities, and for
    autoregressive text, whose per-position distributions hold along the greedy string only:
    letters other than the greedy ones would be drawn from distributions that do not apply."""
    modality = model.modalities[name]
    plugin = modality.plugin
    needed = ("alphabet", "pad", "to_text")
    if plugin is None or not all(hasattr(plugin, a) for a in needed) or x.shape[0] < 2:
        return None
    if getattr(modality.likelihood, "support", None) == "sequence":
        return None
    probs = x.detach().float().cpu()
    pad = plugin.alphabet.index(plugin.pad)
    others = probs.clone()
    others[:, pad] = -1.0
    best = others.argmax(-1)
    strength = probs.gather(-1, best[:, None])[:, 0]
    text = plugin.to_text(torch.nn.functional.one_hot(best, probs.shape[-1]), strip=False)
    shown = "".join(c if w >= 0.1 else " " for c, w in zip(text, strength.tolist()))
    return shown, strength.tolist()


def missing_tile(like: np.ndarray) -> np.ndarray:
    return np.full_like(like, MISSING_GREY)


def categorical_text(model: MultiModalVAE, name: str, x: Tensor) -> str:
    """The string of one categorical example (one-hot or probabilities `[n, C]`).

    A single variable (`[1, C]`, a label) shows its class name, and under it the
    probability when the value is not one-hot; longer ones (text) show the plugin's
    preview, one symbol per position."""
    x = x.detach().float().cpu()
    plugin = model.modalities[name].plugin
    if x.shape[0] == 1:
        index = int(x[0].argmax())
        label = str(plugin.name(index)) if hasattr(plugin, "name") else str(index)
        p = float(x[0, index])
        return label if p >= 0.995 else f"{label}\np={p:.2f}"
    if plugin is not None:
        try:
            shown = plugin.preview(x)
        except Exception:  # noqa: BLE001 - a plugin's preview is a courtesy; fall back
            shown = None
        if isinstance(shown, str):
            return shown
    return " ".join(str(int(i)) for i in x.argmax(-1))


def strip(tiles: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Tiles of one height side by side with white gaps."""
    height = max(t.shape[0] for t in tiles)
    parts = []
    for i, tile in enumerate(tiles):
        if tile.shape[0] != height:
            pad = np.ones((height - tile.shape[0], tile.shape[1], 3), dtype=np.float32)
            tile = np.concatenate([tile, pad])
        parts.append(tile)
        if i < len(tiles) - 1:
            parts.append(np.ones((height, gap, 3), dtype=np.float32))
    return np.concatenate(parts, axis=1)


def _text_width(texts: Sequence[str]) -> int:
    return max([4] + [len(line) for text in texts for line in text.split("\n")])


def example_strip(
    model: MultiModalVAE,
    name: str,
    values: Tensor,
    present: Tensor | None = None,
    chars: int | None = None,
) -> np.ndarray:
    """A strip of the examples `values [k, *event]`; rows not `present` drawn as missing.
    Text tiles are `chars` characters wide (default: the longest string)."""
    if modality_style(model, name) == "image":
        tiles = [image_tile(v) for v in values]
    else:
        glyphs = [text_glyphs(model, name, v) for v in values]
        if all(g is not None for g in glyphs):
            width = chars or _text_width([g[0] for g in glyphs])  # type: ignore[index]
            tiles = [text_tile(t, width, strength=w) for t, w in glyphs]  # type: ignore[misc]
        else:
            texts = [categorical_text(model, name, v) for v in values]
            width = chars or _text_width(texts)
            tiles = [text_tile(t, width) for t in texts]
    if present is not None:
        tiles = [t if bool(p) else missing_tile(t) for t, p in zip(tiles, present)]
    return strip(tiles)


# ----------------------------------------------------------------------------- scatter cells


@dataclass
class Scatter:
    """Points to scatter `[N, 2]` over grey reference points, coloured by `labels`."""

    points: np.ndarray
    labels: np.ndarray | None = None
    reference: np.ndarray | None = None


@dataclass
class Projection:
    """A fixed map of a vector modality to 2-D: the first two principal axes of the data
    (the identity for 1- and 2-D vectors; 1-D values get a zero second axis)."""

    mean: np.ndarray
    axes: np.ndarray | None

    @classmethod
    def fit(cls, data: np.ndarray) -> Projection:
        data = data.reshape(data.shape[0], -1).astype(np.float64)
        if data.shape[1] <= 2:
            return cls(np.zeros(data.shape[1]), None)
        mean = data.mean(0)
        _, _, vt = np.linalg.svd(data - mean, full_matrices=False)
        return cls(mean, vt[:2].T)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        values = values.reshape(values.shape[0], -1).astype(np.float64)
        if self.axes is None:
            if values.shape[1] == 1:
                return np.concatenate([values, np.zeros_like(values)], 1)
            return values
        return (values - self.mean) @ self.axes


def _labels_array(labels: Tensor | None) -> np.ndarray | None:
    if labels is None:
        return None
    values = labels.detach().cpu()
    if values.dim() > 1:
        values = values.reshape(values.shape[0], -1)[:, 0]
    return values.numpy()


def _draw_scatter(ax: plt.Axes, cell: Scatter) -> None:
    if cell.reference is not None:
        ax.scatter(*cell.reference.T, s=4, c="#c8c8c8", linewidths=0, rasterized=True)
    colour_kwargs: dict[str, object] = {"c": CROSS_COLOUR}
    if cell.labels is not None:
        discrete = np.issubdtype(cell.labels.dtype, np.integer)
        colour_kwargs = {"c": cell.labels % 10 if discrete else cell.labels}
        colour_kwargs |= {"cmap": "tab10", "vmin": -0.5, "vmax": 9.5} if discrete else {}
    ax.scatter(*cell.points.T, s=6, linewidths=0, alpha=0.85, **colour_kwargs)
    everything = cell.points
    if cell.reference is not None and len(cell.reference):
        everything = np.concatenate([cell.points, cell.reference])
    if len(everything) == 0:
        return
    low, high = np.nanpercentile(everything, [0.5, 99.5], axis=0)
    span = np.maximum(high - low, 1e-6)
    ax.set_xlim(low[0] - 0.08 * span[0], high[0] + 0.08 * span[0])
    ax.set_ylim(low[1] - 0.08 * span[1], high[1] + 0.08 * span[1])


# ----------------------------------------------------------------------------- grids


@dataclass
class Grid:
    """Cells keyed by (row, column); each an RGB strip, a `Scatter`, or None (left blank)."""

    rows: list[str]
    columns: list[str]
    cells: dict[tuple[int, int], np.ndarray | Scatter | None] = field(default_factory=dict)
    frames: dict[tuple[int, int], str] = field(default_factory=dict)
    title: str = ""
    caption: str = ""


#: inches of a row of strips, of a row holding scatter plots, and the widest figure
STRIP_ROW = 0.72
SCATTER_ROW = 1.7
MAX_WIDTH = 22.0


@dataclass
class _Layout:
    """A grid's measures in inches, and its font size in points."""

    widths: list[float]
    row_height: float
    content: float
    label_width: float
    font: float
    fig_width: float
    fig_height: float
    top_pad: float
    bottom_pad: float
    caption: str


def draw_grid(grid: Grid, path: Path) -> Path:
    """Lay the grid out in inches (strips keep their aspect, scatter cells are about
    square) and save it as a PNG. Text grows with the figure, so that it stays legible when
    the picture is shown scaled to a page's width."""
    layout = _layout(grid)
    fig = plt.figure(figsize=(layout.fig_width, layout.fig_height), dpi=DPI)
    spec = fig.add_gridspec(
        len(grid.rows),
        len(grid.columns),
        width_ratios=layout.widths,
        left=layout.label_width / layout.fig_width,
        right=1 - 0.1 / layout.fig_width,
        top=1 - layout.top_pad / layout.fig_height,
        bottom=layout.bottom_pad / layout.fig_height,
        wspace=0.12 * len(layout.widths) / max(layout.content, 1e-6),
        hspace=0.1 / layout.row_height,
    )
    for r, row_name in enumerate(grid.rows):
        for c, column_name in enumerate(grid.columns):
            _draw_cell(fig.add_subplot(spec[r, c]), grid, (r, c), (row_name, column_name), layout)
    font, fig_height = layout.font, layout.fig_height
    if grid.title:
        fig.suptitle(grid.title, fontsize=font + 2, y=1 - 0.06 / fig_height, va="top")
    if layout.caption:
        fig.text(
            0.5,
            0.06 / fig_height,
            layout.caption,
            ha="center",
            va="bottom",
            fontsize=font - 1,
            color="#444",
            linespacing=1.3,
        )
    return _save(fig, path)


def _label_points(text: str, font: float) -> float:
    """The width of `text` in points at `font` size, in matplotlib's default font."""
    from matplotlib.textpath import TextPath

    return float(TextPath((0, 0), text, size=font).get_extents().width)


def _layout(grid: Grid) -> _Layout:
    has_scatter = any(isinstance(cell, Scatter) for cell in grid.cells.values())
    row_height = SCATTER_ROW if has_scatter else STRIP_ROW
    if has_scatter and len(grid.rows) > 8:
        row_height *= max(0.65, 8 / len(grid.rows))
    # Strips are at most STRIP_ROW tall even in rows made taller for scatter plots.
    strip_height = min(row_height, STRIP_ROW * 1.3)
    widths = _column_widths(grid, strip_height, row_height)
    longest = max(len(r) for r in grid.rows)
    gaps = 0.12 * len(widths)
    estimate = min(MAX_WIDTH, sum(widths) + gaps + 0.1 * longest + 0.4)
    font = float(np.clip(0.62 * estimate, 10.0, 16.0))
    # Measured, not counted: "given m0+m1+m2+m3+m4" is wider than 20 average characters.
    label_width = max(_label_points(label, font) for label in grid.rows) / 72 + 0.3
    content = sum(widths)
    room = MAX_WIDTH - label_width - gaps
    if content > room:
        row_height *= room / content
        widths = [w * room / content for w in widths]
        content = room
    fig_width = label_width + content + gaps + 0.1
    caption = ""
    if grid.caption:
        per_line = max(40, int(fig_width * 72 / (0.55 * (font - 1))))
        caption = "\n".join(textwrap.wrap(grid.caption, per_line))
    line = 1.45 / 72
    top_pad = (font + 2) * line * (1.3 if grid.title else 0) + (font + 1) * line + 0.12
    bottom_pad = (caption.count("\n") + 1) * (font - 1) * line + 0.15 if caption else 0.08
    fig_height = top_pad + bottom_pad + len(grid.rows) * (row_height + 0.1)
    return _Layout(
        widths,
        row_height,
        content,
        label_width,
        font,
        fig_width,
        fig_height,
        top_pad,
        bottom_pad,
        caption,
    )


def _column_widths(grid: Grid, strip_height: float, row_height: float) -> list[float]:
    """Inches per column: its widest strip at `strip_height`, or about square for scatter."""
    widths = []
    for c in range(len(grid.columns)):
        column = [cell for (_, cc), cell in grid.cells.items() if cc == c and cell is not None]
        ratios = [cell.shape[1] / cell.shape[0] for cell in column if isinstance(cell, np.ndarray)]
        widths.append(max(ratios) * strip_height if ratios else 1.2 * row_height)
    return widths


def _draw_cell(
    ax: plt.Axes,
    grid: Grid,
    position: tuple[int, int],
    names: tuple[str, str],
    layout: _Layout,
) -> None:
    """One cell: its picture, its frame, and the column title or row name at the edges."""
    r, c = position
    row_name, column_name = names
    cell = grid.cells.get((r, c))
    if isinstance(cell, np.ndarray):
        ax.imshow(cell, interpolation="nearest", aspect="equal")
    elif isinstance(cell, Scatter):
        _draw_scatter(ax, cell)
    ax.set_xticks([])
    ax.set_yticks([])
    colour = grid.frames.get((r, c), DATA_COLOUR if cell is not None else "white")
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(0.8 if colour == DATA_COLOUR else 2.4)
    if r == 0:
        ax.set_title(column_name, fontsize=layout.font + 1, pad=4)
    if c == 0:
        ax.text(
            -0.1 / layout.widths[0],
            0.5,
            row_name,
            transform=ax.transAxes,
            ha="right",
            va="center",
            fontsize=layout.font,
        )


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the figures


def display_rows(data: Batch, count: int) -> Tensor:
    """Indices of `count` rows to show: rows observing every modality first."""
    full = torch.nonzero(data.avail.bool().all(1)).flatten()
    rest = torch.nonzero(~data.avail.bool().all(1)).flatten()
    return torch.cat([full, rest])[:count]


@dataclass
class Row:
    """One row of a figure: the data (`source="data"`), decoder means given a subset
    (`subset`, or `per_column` subsets), or decoder means of prior draws (`"prior"`)."""

    label: str
    source: str = "subset"
    subset: Subset | None = None
    per_column: dict[str, Subset] | None = None


@torch.no_grad()
def _row_values(
    model: MultiModalVAE, data: Batch, row: Row, name: str, cache: dict[tuple, dict[str, Tensor]]
) -> Tensor:
    """The values of modality `name` in `row` for the rows of `data` (decoder means from one
    draw per example; the draw is shared by the columns of a row)."""
    if row.source == "data":
        return data.x[name]
    if row.source == "prior":
        key = ("prior", id(data), row.label)
        if key not in cache:
            cache[key] = decoder_means(model, model.prior.sample(data.size), model.modality_names)
        return cache[key][name]
    subset = row.per_column[name] if row.per_column is not None else row.subset
    assert subset is not None
    key = (subset.name, id(data), row.per_column is not None and name)
    if key not in cache:
        mask = subset.mask(data.size, model.num_modalities, data.avail.device)
        z = model.encode(data, mask).rsample(1)[0]
        cache[key] = decoder_means(model, z, model.modality_names)
    return cache[key][name]


def conditional_grid(
    model: MultiModalVAE,
    data: Batch,
    rows: Sequence[Row],
    examples: int,
    scatter_points: int,
    title: str,
    caption: str = "",
) -> Grid:
    """A grid of `rows` × modalities: strips of `examples` rows for images and text,
    scatters of `scatter_points` rows (over the data in grey) for vectors."""
    names = list(model.modality_names)
    grid = Grid([row.label for row in rows], names, title=title, caption=caption)
    shown = data.take(display_rows(data, examples))
    scattered = data.take(torch.arange(min(scatter_points, data.size)))
    labels = _labels_array(scattered.labels)
    cache: dict[tuple, dict[str, Tensor]] = {}
    for c, name in enumerate(names):
        style = modality_style(model, name)
        if style == "scatter":
            observed = data.avail[:, c].bool()
            projection = Projection.fit(data.x[name][observed].cpu().numpy())
            reference = projection(scattered.x[name][scattered.avail[:, c].bool()].cpu().numpy())
        else:
            texts: dict[int, Tensor] = {}
        for r, row in enumerate(rows):
            subset = row.per_column[name] if row.per_column is not None else row.subset
            if row.source != "data":
                in_s = subset is not None and c in subset
                grid.frames[(r, c)] = RECON_COLOUR if in_s else CROSS_COLOUR
            if style == "scatter":
                values = _row_values(model, scattered, row, name, cache)
                if row.source == "data":
                    keep = scattered.avail[:, c].bool()
                elif row.source == "prior":
                    keep = torch.ones(scattered.size, dtype=torch.bool)
                else:
                    assert subset is not None
                    keep = subset.observed(scattered.avail)
                grid.cells[(r, c)] = Scatter(
                    projection(values[keep].cpu().numpy()),
                    None if labels is None or row.source == "prior" else labels[keep.numpy()],
                    None if row.source == "data" else reference,
                )
            else:
                texts[r] = _row_values(model, shown, row, name, cache)
        if style == "scatter":
            continue
        chars = None
        if style == "text":
            chars = _text_width(
                [categorical_text(model, name, v) for values in texts.values() for v in values]
            )
        for r, values in texts.items():
            present = shown.avail[:, c].bool() if rows[r].source == "data" else None
            grid.cells[(r, c)] = example_strip(model, name, values, present, chars)
    return grid


def cross_generation_figure(
    model: MultiModalVAE,
    data: Batch,
    subsets: Sequence[Subset],
    path: Path,
    examples: int = 8,
    scatter_points: int = 600,
) -> Path:
    """Rows: the data, then one row per conditioning subset S; columns: the generated
    modalities (decoder means from one draw z ~ q(z | x_S), shared by the row)."""
    rows = [Row("data", "data")] + [Row(f"given {s.name}", subset=s) for s in subsets]
    grid = conditional_grid(
        model,
        data,
        rows,
        examples,
        scatter_points,
        "Cross-generation: decoder means from z ~ q(z | x_S)",
        "blue frame: generated from the other modalities   ·   grey frame: reconstruction "
        "(the column's modality is in S)   ·   column k of every strip: the same test example",
    )
    return draw_grid(grid, path)


def reconstructions_figure(
    model: MultiModalVAE, data: Batch, path: Path, examples: int = 12, scatter_points: int = 600
) -> Path:
    """Rows: the data, reconstructions from everything observed, and from the modality alone."""
    names = list(model.modality_names)
    everything = Subset(tuple(range(len(names))), tuple(names))
    alone = {name: Subset((i,), (name,)) for i, name in enumerate(names)}
    rows = [
        Row("data", "data"),
        Row("from all", subset=everything),
        Row("from itself", per_column=alone),
    ]
    grid = conditional_grid(
        model,
        data,
        rows,
        examples,
        scatter_points,
        "Reconstructions: decoder means from z ~ q(z | x_S)",
        "from all: S = every observed modality   ·   from itself: S = the column's modality alone",
    )
    return draw_grid(grid, path)


@torch.no_grad()
def prior_samples_figure(
    model: MultiModalVAE,
    data: Batch,
    path: Path,
    samples: int = 8,
    rows: int = 3,
    scatter_points: int = 600,
) -> Path:
    """Decoder means of prior draws z ~ p(z), `rows` rows of `samples` draws: within a row,
    column k of every strip is the same draw (vectors: a cloud of draws over the data in
    grey)."""
    grid = conditional_grid(
        model,
        data,
        [Row(f"draws {i * samples + 1}–{(i + 1) * samples}", "prior") for i in range(rows)],
        samples,
        scatter_points,
        "Prior samples: decoder means of z ~ p(z)",
        "within a row, column k of every strip is the same draw z",
    )
    return draw_grid(grid, path)


def latent_projection_figure(
    model: MultiModalVAE,
    data: Batch,
    subsets: Sequence[Subset],
    path: Path,
    max_points: int = 2000,
) -> Path:
    """Posterior means of q(z | x_S) on the first two principal axes of the full-set means,
    one panel per S, coloured by label."""
    data = data.take(torch.arange(min(max_points, data.size)))
    full = subsets[-1]
    reference = posterior_means(model, data, full).double().numpy()
    projection = Projection.fit(reference)
    labels = _labels_array(data.labels)
    panels = len(subsets)
    columns = min(panels, 4)
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.3 * columns, 3.3 * rows + 0.6), dpi=DPI, squeeze=False
    )
    for ax in axes.flat[panels:]:
        ax.axis("off")
    scatter = None
    for ax, subset in zip(axes.flat, subsets):
        rows_in = subset.observed(data.avail)
        means = posterior_means(model, data.take(torch.nonzero(rows_in).flatten()), subset)
        points = projection(means.double().numpy())
        colours = None if labels is None else labels[rows_in.numpy()]
        scatter = _latent_scatter(ax, points, colours)
        ax.set_title(f"q(z | {subset.name})", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axis_name = "latent dims 1–2" if projection.axes is None else "principal axes 1–2 of q(z | all)"
    fig.suptitle(f"Posterior means ({axis_name}), coloured by label", fontsize=12)
    if labels is not None and scatter is not None and np.issubdtype(labels.dtype, np.integer):
        values = np.unique(labels)
        handles = [
            plt.Line2D(
                [], [], marker="o", ls="", color=plt.get_cmap("tab10")(int(v) % 10), label=str(v)
            )
            for v in values[:20]
        ]
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=min(10, len(handles)),
            fontsize=8,
            frameon=False,
        )
    fig.tight_layout(rect=(0, 0.06 if labels is not None else 0, 1, 0.95))
    return _save(fig, path)


def _latent_scatter(ax: plt.Axes, points: np.ndarray, labels: np.ndarray | None) -> object:
    if labels is None:
        return ax.scatter(*points.T, s=4, c=CROSS_COLOUR, linewidths=0)
    if np.issubdtype(labels.dtype, np.integer):
        return ax.scatter(
            *points.T, s=4, c=labels % 10, cmap="tab10", vmin=-0.5, vmax=9.5, linewidths=0
        )
    return ax.scatter(*points.T, s=4, c=labels, cmap="viridis", linewidths=0)


CURVES = (
    ("train/masked_objective", "training masked objective", "#1f77b4"),
    ("train/mixture_objective", "training mixture objective", "#1f77b4"),
    ("train/elbo", "training ELBO", "#9467bd"),
    ("eval/masked_objective", "held-out masked objective", "#ff7f0e"),
    ("eval/mixture_objective", "held-out mixture objective", "#ff7f0e"),
    ("eval/elbo", "held-out ELBO", "#8c564b"),
    ("eval/is_ll", "held-out IS log-likelihood", "#2ca02c"),
)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The records of a run's `metrics.jsonl` (unreadable lines skipped)."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def training_curves_figure(metrics_path: Path, path: Path) -> Path | None:
    """The training objective (and ELBO), and the held-out objective, ELBO and IS
    log-likelihood when the run evaluated, against the step; None when the log holds none."""
    records = read_metrics(metrics_path)
    series = {
        key: np.array(
            [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
        ).reshape(-1, 2)
        for key, _, _ in CURVES
    }
    series = {key: points[np.isfinite(points[:, 1])] for key, points in series.items()}
    train_keys = [key for key, _, _ in CURVES if key.startswith("train/")]
    eval_keys = [key for key, _, _ in CURVES if key.startswith("eval/")]
    panels = [("training split", train_keys), ("held-out split", eval_keys)]
    panels = [(title, keys) for title, keys in panels if any(len(series[k]) for k in keys)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), dpi=DPI)
    axes = np.atleast_1d(axes)
    styles = {key: (label, colour) for key, label, colour in CURVES}
    for ax, (title, keys) in zip(axes, panels):
        shown = []
        for key in keys:
            points = series[key]
            if not len(points):
                continue
            label, colour = styles[key]
            marker = "o" if key.startswith("eval/") else None
            ax.plot(*points.T, marker=marker, ms=4, color=colour, lw=1.3, label=label)
            shown.append(points[:, 1])
        ax.set_ylim(*_robust_limits(np.concatenate(shown)))
        ax.set_title(title)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("nats per example")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def _robust_limits(values: np.ndarray) -> tuple[float, float]:
    """Y limits that keep the first steps' very low values from flattening the curve."""
    low = float(np.percentile(values, 5))
    high = float(values.max())
    span = max(high - low, 1e-6)
    return low - 0.1 * span, high + 0.1 * span


def coherence_by_size_figure(
    sizes: Sequence[dict[str, float]], joint: float | None, path: Path
) -> Path:
    """Mean cross-generation coherence against the number k of given modalities (one line,
    `mmtrain.evaluation.coherence.coherence_by_size`), with joint coherence of prior draws
    as a dotted reference line when known."""
    given = np.array([entry["given"] for entry in sizes], dtype=float)
    values = np.array([entry["coherence"] for entry in sizes], dtype=float) * 100.0
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=DPI)
    ax.plot(given, values, marker="o", ms=5, lw=1.5, color=CROSS_COLOUR, label="coherence S → j")
    for k, value in zip(given, values):
        if np.isfinite(value):
            ax.annotate(
                f"{value:.1f}%",
                (k, value),
                textcoords="offset points",
                xytext=(0, 7),
                ha="center",
                fontsize=8,
            )
    if joint is not None and math.isfinite(joint):
        ax.axhline(
            100.0 * joint,
            ls=":",
            lw=1.3,
            color=RECON_COLOUR,
            label=f"joint coherence (prior) {100 * joint:.1f}%",
        )
    ax.set_xticks(given)
    ax.set_xlim(given.min() - 0.5, given.max() + 0.5)
    ax.set_ylim(0, 112)  # room for the labels above 100 %
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("number of given modalities k = |S|")
    ax.set_ylabel("coherence (%), mean over S and j ∉ S")
    ax.set_title("Cross-generation coherence by number of given modalities", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.tight_layout()
    return _save(fig, path)
