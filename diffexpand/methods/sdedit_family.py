"""SDEdit-based baselines: start from a real image's latent, noise it part-way, denoise with a prompt.

- real_guidance (He et al. 2023): class-name prompt, small strength 0.1.
- dafusion (Trabucco et al. 2024): learned tokens (no LoRA), strength drawn per image from a set.
- diffaug: learned tokens + LoRA, strength 1.0 unless configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import ExpansionMethod, pick_source, stack
from .common import decode, sdedit
from .registry import register_method


@dataclass
class _SDEditMethod(ExpansionMethod):
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    strengths: list[float] = field(default_factory=lambda: [0.5])

    uses_sources = True

    def __post_init__(self):
        if not self.strengths or any(not 0.0 <= s <= 1.0 for s in self.strengths):
            raise ValueError(f"strengths must be a non-empty list of values in [0, 1], got {self.strengths}")

    def prompts(self, ctx):
        return ctx.class_prompts if self.uses_concepts else ctx.plain_prompts

    def plan(self, ctx, label, rng, index=0) -> dict:
        return {
            "source_ids": [pick_source(ctx, label, rng)],
            "strength": float(self.strengths[int(rng.integers(len(self.strengths)))]),
            "prompt": self.prompts(ctx)[label],
        }

    @torch.no_grad()
    def generate(self, parts, records: list[dict]) -> torch.Tensor:
        sources = stack(records, "source_latent", parts)
        prompts, strengths = [r["prompt"] for r in records], [r["strength"] for r in records]
        latents = sdedit(
            parts, sources, records, prompts, strengths, self.num_inference_steps, self.guidance_scale,
            self.negative_prompt,
        )  # fmt: skip
        return decode(parts, latents)


@register_method("real_guidance")
@dataclass
class RealGuidance(_SDEditMethod):
    strengths: list[float] = field(default_factory=lambda: [0.1])


@register_method("dafusion")
@dataclass
class DAFusion(_SDEditMethod):
    strengths: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    uses_concepts = True
    concept_lora = False  # DA-Fusion learns textual-inversion tokens only


@register_method("diffaug")
@dataclass
class DiffAug(_SDEditMethod):
    strengths: list[float] = field(default_factory=lambda: [1.0])
    uses_concepts = True
