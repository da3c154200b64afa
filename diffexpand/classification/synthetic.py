"""A synthetic set read back from its folder (images + metadata.jsonl), grouped by class."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from diffexpand.manifest import read_manifest


@dataclass
class SyntheticSet:
    folder: Path
    records: list[dict]
    by_class: dict[int, list[int]] = field(default_factory=dict)  # label -> record indices

    @classmethod
    def read(cls, folder: str | Path, num_classes: int) -> SyntheticSet:
        folder = Path(folder)
        records = read_manifest(folder)
        if not records:
            raise FileNotFoundError(
                f"synthetic set {folder} has no images (no metadata.jsonl records); make it with "
                "`python expand.py predict --config configs/expand/<method>.yaml --output_dir DIR`"
            )
        by_class: dict[int, list[int]] = {}
        for i, r in enumerate(records):
            label = int(r["label"])
            if not 0 <= label < num_classes:
                raise ValueError(
                    f"{folder}: record {r.get('id', i)} has label {label}, not in [0, {num_classes})"
                )
            soft = r.get("soft_label")
            if soft is not None and len(soft) != num_classes:
                raise ValueError(
                    f"{folder}: soft_label of {r.get('id', i)} has {len(soft)} entries, "
                    f"the dataset {num_classes} classes"
                )
            by_class.setdefault(label, []).append(i)
        return cls(folder, records, by_class)

    def image(self, i: int) -> Image.Image:
        return Image.open(self.folder / self.records[i]["file_name"]).convert("RGB")

    def __len__(self) -> int:
        return len(self.records)
