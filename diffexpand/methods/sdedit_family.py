"""SDEdit-based baselines: start from a real image's latent, noise it part-way, denoise with a prompt.

- real_guidance (He et al. 2023): class-name prompt, small strength 0.1.
- dafusion (Trabucco et al. 2024): learned tokens (no LoRA), strength drawn per image from a set.
- diffaug: learned tokens + LoRA, strength 1.0 unless configured.

Sources: each record draws one real image of its class at random (as their official code does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import ExpansionMethod, document_inherited_settings, pick_source
from .common import decode, sdedit
from .denoising import DenoisingSettings
from .inputs import real_latents
from .record import Batch, Generated, Record
from .registry import register_method


@document_inherited_settings
@dataclass
class SDEditMethod(DenoisingSettings, ExpansionMethod):
    """SDEdit from a real image of the class with the class prompt.

    Args:
        num_inference_steps: denoising steps of the full schedule (SDEdit runs the last `strength` of them).
        guidance_scale: classifier-free guidance scale.
        negative_prompt: the unconditional prompt of classifier-free guidance.
        strengths: SDEdit strengths in [0, 1] (0: the real image, 1: from pure noise); each record
            draws one.
    """

    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    strengths: list[float] = field(default_factory=lambda: [0.5])

    def __post_init__(self):
        self.check_denoising_settings()
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

    def prepare(self, ws) -> dict:
        return {"latents": real_latents(ws, self.name)}

    def inputs_for(self, record: Record, prepared: dict) -> dict[str, torch.Tensor]:
        return {"source_latent": prepared["latents"][record["source_ids"][0]]}

    @torch.no_grad()
    def generate(self, parts, batch: Batch) -> Generated:
        sources = batch.stack("source_latent").to(parts.unet.device, parts.unet.dtype)
        steps, guidance = self.num_inference_steps, self.guidance_scale
        strengths, negative = batch.values("strength"), self.negative_prompt
        latents = sdedit(parts, sources, batch.records, strengths, steps, guidance, negative, self)
        return Generated.plain(decode(parts, latents))


@register_method("real_guidance")
@document_inherited_settings
@dataclass
class RealGuidance(SDEditMethod):
    """Real-Guidance (He et al. 2023): SDEdit of a real image with the class-name prompt.

    Args:
        strengths: SDEdit strengths; each record draws one (paper: 0.1).
    """

    strengths: list[float] = field(default_factory=lambda: [0.1])


@register_method("dafusion")
@document_inherited_settings
@dataclass
class DAFusion(SDEditMethod):
    """DA-Fusion (Trabucco et al. 2024): learned class tokens (no LoRA) and SDEdit.

    Args:
        strengths: SDEdit strengths; each record draws one (paper: {0.25, 0.5, 0.75, 1.0}).
    """

    strengths: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    uses_concepts = True
    concept_lora = False  # DA-Fusion learns textual-inversion tokens only


@register_method("diffaug")
@document_inherited_settings
@dataclass
class DiffAug(SDEditMethod):
    """Diff-AUG: learned class tokens with the shared LoRA, and SDEdit.

    Args:
        strengths: SDEdit strengths; each record draws one (default: 1.0, from noise).
    """

    strengths: list[float] = field(default_factory=lambda: [1.0])
    uses_concepts = True
