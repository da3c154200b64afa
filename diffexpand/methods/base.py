"""What an expansion method is: a planner of per-image random choices, the builder of its own
precomputed inputs, and a batched generator.

- `plan` runs once per synthetic image, on the CPU, before any model work: it draws every random
  choice (source image, pair, strength, target class, suffix …) from the image's own generator and
  returns them as plain values, which become the record's `choices` and end up in metadata.jsonl.
- `setup` (before planning) and `prepare` (after planning, only when images are left to generate)
  build what the method needs from the real images and the model — through the `Workspace`, which
  caches them on disk. `inputs_for` hands each record its share (e.g. its source image's latent).
- `generate` turns a `Batch` of records and their inputs into images in [-1, 1] plus what it
  measured per record (`Generated`). Nothing depends on batch composition.

A new method is one file: a dataclass subclass registered with `register_method`, whose fields are its
settings (documented in its docstring's Args section, which `--help` shows).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from .common import PlanContext
from .inputs import Workspace
from .record import Batch, Generated, Record


class ExpansionMethod:
    name: str = "base"  # the registry name, set by `register_method`
    uses_concepts: bool = False  # needs a concept folder (learned tokens)
    concept_lora: bool = True  # with concepts: also load the shared LoRA

    def setup(self, ws: Workspace) -> None:
        """Before planning: build what `plan` needs (e.g. generated suffixes). Default: nothing."""

    def prepare(self, ws: Workspace) -> dict[str, Any]:
        """After planning, when images are left to generate: the precomputed inputs, by name
        (tables by image id or by class). Default: none."""
        return {}

    def inputs_for(self, record: Record, prepared: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The tensors `generate` needs for `record`, looked up in `prepare`'s result."""
        return {}

    def modules(self) -> dict[str, torch.nn.Module]:
        """Networks the method runs besides the diffusion model (a feature extractor), so the caller
        moves them to the generating device with it."""
        return {}

    def plan(self, ctx: PlanContext, label: int, rng: np.random.Generator, index: int = 0) -> dict:
        """The record's random choices, from `rng` only; `index` is the record's position among its
        class's records (0, 1, …), for methods that walk the real images in order (DistDiff)."""
        raise NotImplementedError

    def generate(self, parts, batch: Batch) -> Generated:
        raise NotImplementedError

    # What the Expander does with a sample whose image came out NaN / Inf (an fp16 overflow, a
    # diverging guidance step): regenerate it in full precision with `generate_fallback`, record this
    # note in its metadata, and stop with an error if it is still not finite — never write it.
    fallback_note = "regenerated without autocast"

    def generate_fallback(self, parts, batch: Batch) -> Generated:
        return self.generate(parts, batch)

    def settings(self) -> dict[str, Any]:
        """Every setting (the dataclass fields), for the run's settings check."""
        return asdict(self)


def pick_source(ctx: PlanContext, label: int, rng: np.random.Generator) -> str:
    """A real image of the class drawn at random (the SDEdit baselines, as their official code)."""
    members = class_members(ctx, label)
    return members[int(rng.integers(len(members)))]


def cycle_source(ctx: PlanContext, label: int, index: int) -> str:
    """The class's real images in turn: record k starts from image k mod n, so every real image is a
    source exactly `expansion_ratio` times (⌊·⌋ or ⌈·⌉ when the ratio is not a whole number)."""
    members = class_members(ctx, label)
    return members[index % len(members)]


def class_members(ctx: PlanContext, label: int) -> list[str]:
    members = ctx.source_ids[label]
    if not members:
        raise ValueError(f"class {ctx.class_names[label]!r} has no real image to start from")
    return members


def document_inherited_settings(cls: type) -> type:
    """Append to `cls`'s docstring, which must end with its own Args section, the Args its bases
    document and it does not: `python expand.py methods NAME` reads a method's own docstring only."""
    import docstring_parser

    documented = {p.arg_name for p in docstring_parser.parse(cls.__doc__ or "").params}
    lines = []
    for base in cls.__mro__[1:]:
        for param in docstring_parser.parse(base.__doc__ or "").params:
            if param.arg_name not in documented:
                documented.add(param.arg_name)
                lines.append(f"        {param.arg_name}: {' '.join((param.description or '').split())}")
    cls.__doc__ = "\n".join([(cls.__doc__ or "").rstrip(), *lines]) + "\n    "
    return cls
