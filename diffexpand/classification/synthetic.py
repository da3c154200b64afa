"""A synthetic set read back from its folder (images + metadata.jsonl), grouped by class."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from diffexpand.set_reader import decode_set_image, read_nonempty_set


@dataclass
class SyntheticSet:
    folder: Path
    records: list[dict]
    by_class: dict[int, list[int]] = field(default_factory=dict)  # label -> record indices
    paths: list[Path] = field(default_factory=list)  # each record's image, checked to lie in the folder

    @classmethod
    def read(cls, folder: str | Path, num_classes: int) -> SyntheticSet:
        """Every line checked once here, before training starts (`read_nonempty_set`): a faulty set stops the
        run now, with all its faults listed, never at the first bad draw in some epoch."""
        folder = Path(folder)
        checked = read_nonempty_set(folder, num_classes)
        by_class: dict[int, list[int]] = {}
        for i, r in enumerate(checked.records):
            by_class.setdefault(r["label"], []).append(i)
        return cls(folder, checked.records, by_class, checked.paths)

    def image(self, i: int) -> Image.Image:
        return decode_set_image(self.paths[i])

    def __len__(self) -> int:
        return len(self.records)
