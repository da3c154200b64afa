"""A contact sheet of a synthetic set: one row per class, the first few images of each."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from .manifest import read_manifest


def contact_sheet(folder: str | Path, per_class: int = 8, scale: int = 2, pad: int = 2) -> Image.Image | None:
    folder = Path(folder)
    rows: dict[int, list[str]] = defaultdict(list)
    for record in read_manifest(folder):
        if len(rows[record["label"]]) < per_class:
            rows[record["label"]].append(record["file_name"])
    if not rows:
        return None
    tiles = {}
    for label, files in rows.items():
        tiles[label] = [np.asarray(Image.open(folder / f).convert("RGB")) for f in files]
    h, w = next(iter(tiles.values()))[0].shape[:2]
    cols = max(len(t) for t in tiles.values())
    sheet = np.full((len(tiles) * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for r, label in enumerate(sorted(tiles)):
        for c, tile in enumerate(tiles[label]):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            sheet[y : y + h, x : x + w] = tile[:h, :w]
    image = Image.fromarray(sheet)
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image
