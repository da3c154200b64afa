"""What a synthetic image is at each stage: planned (`Record`), served with its inputs (`Batch`), and
generated (`Generated`).

A `Record` is made once, by planning, and never changed afterwards: what generation measures (Diff-II's
λ, DistDiff's energies, Real-Filter's scores) comes back beside it as `Generated.extras`, and the
manifest line is the record's `metadata()` followed by those extras — no layer renames or rewrites a
field another layer wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Record:
    """One planned synthetic image.

    `choices` holds every random choice the method made for it (source images, strength, suffix, …),
    drawn from `seed` only, as JSON values; they go to the manifest as they are.
    """

    id: str  # stable across runs: "c0003_00012" (class 3, its 13th image); the image's file name
    label: int
    class_name: str
    seed: int  # the image's own seed; every random draw of its generation derives from it
    method: str
    choices: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        """A planned choice by name (`record["prompt"]`)."""
        return self.choices[key]

    def metadata(self) -> dict[str, Any]:
        """The record as a manifest line (without the file name): fixed fields first, then choices."""
        fixed = {"label": self.label, "id": self.id, "class_name": self.class_name, "seed": self.seed}
        return fixed | {"method": self.method} | self.choices


@dataclass
class Batch:
    """Records served together, each with the precomputed tensors its method asked for (`inputs`:
    one dict per record, e.g. {"source_latent": …})."""

    records: list[Record]
    inputs: list[dict[str, torch.Tensor]]

    @classmethod
    def of(cls, records: list[Record]) -> Batch:
        """Records of a method that needs no precomputed inputs (txt2img)."""
        return cls(records, [{} for _ in records])

    def __len__(self) -> int:
        return len(self.records)

    def values(self, key: str) -> list[Any]:
        """One planned choice of every record, in batch order."""
        return [r[key] for r in self.records]

    def stack(self, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
        """The input `name` of every record stacked, on `like`'s device and dtype when given."""
        stacked = torch.stack([torch.as_tensor(i[name]) for i in self.inputs])
        return stacked if like is None else stacked.to(like)

    def subset(self, positions: list[int]) -> Batch:
        return Batch([self.records[i] for i in positions], [self.inputs[i] for i in positions])


@dataclass
class Generated:
    """Images in [-1, 1], one per record, and per record what generation measured (`extras`, added to
    its manifest line after the planned fields)."""

    images: torch.Tensor
    extras: list[dict[str, Any]]

    @classmethod
    def plain(cls, images: torch.Tensor) -> Generated:
        """Images with nothing measured."""
        return cls(images, [{} for _ in range(len(images))])
