"""A contact sheet of a synthetic set: one row per class, the first few images of each."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from .manifest import read_manifest


def contact_sheet(folder: str | Path, per_class: int = 8, tile: int = 64, pad: int = 2) -> Image.Image | None:
    """Tiles of `tile` px (small images enlarged with nearest-neighbour, large ones reduced): a
    preview of 512 px images at full size would be a 40-megapixel PNG that takes seconds to encode."""
    folder = Path(folder)
    rows: dict[int, list[str]] = defaultdict(list)
    for record in read_manifest(folder):
        if len(rows[record["label"]]) < per_class:
            rows[record["label"]].append(record["file_name"])
    if not rows:
        return None

    def thumbnail(file_name: str) -> np.ndarray:
        with Image.open(folder / file_name) as image:
            image = image.convert("RGB")
            size = (tile, max(1, round(tile * image.height / image.width)))
            small = image.width <= tile
            return np.asarray(image.resize(size, Image.NEAREST if small else Image.BILINEAR))

    tiles = {label: [thumbnail(f) for f in files] for label, files in rows.items()}
    h, w = next(iter(tiles.values()))[0].shape[:2]
    cols = max(len(t) for t in tiles.values())
    sheet = np.full((len(tiles) * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for r, label in enumerate(sorted(tiles)):
        for c, image in enumerate(tiles[label]):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            sheet[y : y + h, x : x + w] = image[:h, :w]
    return Image.fromarray(sheet)
