"""A contact sheet of a synthetic set: one row per class, the first few images of each."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .set_reader import read_set

MAX_NAME_CHARS = 32  # a longer class name is cut, so one long name cannot widen the sheet without bound


def contact_sheet(
    folder: str | Path,
    per_class: int = 8,
    tile: int = 64,
    pad: int = 2,
    *,
    label_rows: bool = False,
    class_names: Sequence[str] | None = None,
) -> Image.Image | None:
    """One row per class of the set in `folder` (its `metadata.jsonl`), the first `per_class` images
    of each, rows in label order; None for a set with no records.

    Tiles are `tile` px wide (small images enlarged with nearest-neighbour, large ones reduced): a
    preview of 512 px images at full size would be a 40-megapixel PNG that takes seconds to encode.

    Args:
        label_rows: draw each row's class name, in PIL's default font, in a white margin left of the
            row. The name is `class_names[label]` when given, else the `class_name` its records carry
            (every expansion method writes it), else the label number. Off by default: the sheet is
            then exactly the image grid, as before this option existed.
        class_names: names by label, for sets whose manifest has no `class_name` (only read with
            `label_rows`).
    """
    # every line checked; images opened where they were found to lie; labels must name a given class
    checked = read_set(folder, len(class_names) if label_rows and class_names is not None else None)
    rows: dict[int, list[Path]] = defaultdict(list)
    names: dict[int, str] = {}
    for record, path in zip(checked.records, checked.paths, strict=True):
        label = record["label"]
        names.setdefault(label, str(record.get("class_name", label)))
        if len(rows[label]) < per_class:
            rows[label].append(path)
    if not rows:
        return None

    def thumbnail(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            image = image.convert("RGB")
            size = (tile, max(1, round(tile * image.height / image.width)))
            small = image.width <= tile
            return np.asarray(image.resize(size, Image.NEAREST if small else Image.BILINEAR))

    tiles = {label: [thumbnail(f) for f in files] for label, files in rows.items()}
    h, w = next(iter(tiles.values()))[0].shape[:2]
    cols = max(len(t) for t in tiles.values())
    order = sorted(tiles)
    sheet = np.full((len(tiles) * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for r, label in enumerate(order):
        for c, image in enumerate(tiles[label]):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            sheet[y : y + h, x : x + w] = image[:h, :w]
    image = Image.fromarray(sheet)
    if not label_rows:
        return image
    if class_names is not None:
        names = {label: str(class_names[label]) for label in order}
    return _with_row_names(image, [_short(names[label]) for label in order], h, pad)


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 3] + "..."


def _with_row_names(grid: Image.Image, names: list[str], row_height: int, pad: int) -> Image.Image:
    """`grid` with a left margin holding each row's name, centred on its row."""
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(int(np.ceil(measure.textlength(name, font=font))) for name in names) + 2 * pad + 2
    out = Image.new("RGB", (grid.width + width, grid.height), (255, 255, 255))
    out.paste(grid, (width, 0))
    draw = ImageDraw.Draw(out)
    for r, name in enumerate(names):
        # right-aligned at the margin's edge, vertically centred on the row (placed by hand: PIL's
        # bitmap fallback font, used where FreeType is missing, supports no text anchors)
        left, top, right, bottom = draw.textbbox((0, 0), name, font=font)
        middle = pad + r * (row_height + pad) + row_height / 2
        x = width - pad - 1 - right
        draw.text((x, round(middle - (top + bottom) / 2)), name, fill=(0, 0, 0), font=font)
    return out
