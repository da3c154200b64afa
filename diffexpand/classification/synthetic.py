"""A synthetic set read back from its folder (images + metadata.jsonl), grouped by class."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from diffexpand.set_reader import CheckedSet, read_nonempty_set


@dataclass
class SyntheticSet:
    checked: CheckedSet  # the records, each with its image checked to lie in the folder, and its line
    by_class: dict[int, list[int]] = field(default_factory=dict)  # label -> record indices

    @classmethod
    def read(cls, folder: str | Path, num_classes: int) -> SyntheticSet:
        """Every line checked once here, before training starts (`read_nonempty_set`): a faulty set stops
        the run now, with all its faults listed, never at the first bad draw in some epoch."""
        checked = read_nonempty_set(Path(folder), num_classes)
        return cls(checked, _by_class(checked.records))

    def subset(self, keep: list[int]) -> SyntheticSet:
        """The same set holding only records `keep` (indices into this one, each at most once)."""
        if len(set(keep)) != len(keep) or any(not 0 <= i < len(self) for i in keep):
            raise ValueError(f"subset of {self.folder}: indices must be distinct and in [0, {len(self)})")
        c = self.checked
        kept = CheckedSet(
            c.folder, [c.records[i] for i in keep], [c.paths[i] for i in keep], [c.lines[i] for i in keep]
        )
        return SyntheticSet(kept, _by_class(kept.records))

    @property
    def folder(self) -> Path:
        return self.checked.folder

    @property
    def records(self) -> list[dict]:
        return self.checked.records

    def image(self, i: int) -> Image.Image:
        """Record i's image; one that no longer decodes names its line in metadata.jsonl."""
        return self.checked.image(i)

    def __len__(self) -> int:
        return len(self.checked)


def _by_class(records: list[dict]) -> dict[int, list[int]]:
    by_class: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        by_class.setdefault(r["label"], []).append(i)
    return by_class
