"""What an expansion method is: a planner of per-image random choices and a batched generator.

`plan` runs once per synthetic image, on the CPU, before any model work: it draws every random choice
(source image, pair, strength, target class, suffix …) from the sample's own generator and returns
them as plain record fields, which end up in metadata.jsonl. `generate` turns a batch of records
(plus the tensors the DataModule attached: source latents, inversions) into images in [-1, 1]; it may
add what it computed (e.g. Diff-II's λ) to the records. Nothing depends on batch composition.
"""

from __future__ import annotations

import numpy as np
import torch

from .common import PlanContext


class ExpansionMethod:
    name: str = "base"
    uses_concepts: bool = False  # needs a concept folder (learned tokens)
    concept_lora: bool = True  # with concepts: also load the shared LoRA
    uses_sources: bool = False  # needs VAE latents of real images ("source_latent")
    uses_inversions: bool = False  # needs the DDIM inversion pool ("inversion_a", "inversion_b")
    uses_real_features: bool = False  # needs class prototypes of real-image features ("prototype")
    feature_extractor = None  # a diffexpand.features extractor, for methods that use one
    prototype_groups: int = 0  # K > 0: also K group prototypes per class ("group_prototypes")
    clustering: str = "kmeans"

    def load_extractor(self):
        """Build the feature extractor (methods with `uses_real_features`)."""
        raise NotImplementedError

    def plan(self, ctx: PlanContext, label: int, rng: np.random.Generator, index: int = 0) -> dict:
        """The record's random choices, from `rng` only; `index` is the record's position among its
        class's records (0, 1, …), for methods that walk the real images in order (DistDiff)."""
        raise NotImplementedError

    def generate(self, parts, records: list[dict]) -> torch.Tensor:
        raise NotImplementedError

    # What the Expander does with a sample whose image came out NaN / Inf (an fp16 overflow, a
    # diverging guidance step): regenerate it in full precision with `generate_fallback`, record this
    # note in its metadata, and stop with an error if it is still not finite — never write it.
    fallback_note = "regenerated without autocast"

    def generate_fallback(self, parts, records: list[dict]) -> torch.Tensor:
        return self.generate(parts, records)


def pick_source(ctx: PlanContext, label: int, rng: np.random.Generator) -> str:
    """A real image of the class drawn at random (the SDEdit baselines, as their official code)."""
    members = _members(ctx, label)
    return members[int(rng.integers(len(members)))]


def cycle_source(ctx: PlanContext, label: int, index: int) -> str:
    """The class's real images in turn: record k starts from image k mod n, so every real image is a
    source exactly `expansion_ratio` times (⌊·⌋ or ⌈·⌉ when the ratio is not a whole number)."""
    members = _members(ctx, label)
    return members[index % len(members)]


def _members(ctx: PlanContext, label: int) -> list[str]:
    members = ctx.source_ids[label]
    if not members:
        raise ValueError(f"class {ctx.class_names[label]!r} has no real image to start from")
    return members


def stack(records: list[dict], key: str, parts) -> torch.Tensor:
    return torch.stack([torch.as_tensor(r[key]) for r in records]).to(parts.unet.device, parts.unet.dtype)
