"""Real-Gen / txt2img: sample each class from its prompt alone, starting from seeded noise."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffexpand.sampling import sample

from .base import ExpansionMethod, document_inherited_settings
from .common import conditions, decode, initial_noise
from .denoising import DenoisingSettings
from .record import Batch, Generated
from .registry import register_method


@register_method("txt2img")
@document_inherited_settings
@dataclass
class Txt2Img(DenoisingSettings, ExpansionMethod):
    """Real-Gen / txt2img: each class from its prompt alone.

    Args:
        num_inference_steps: denoising steps.
        guidance_scale: classifier-free guidance scale.
        negative_prompt: the unconditional prompt of classifier-free guidance.
        uses_concepts: prompt with the concept folder's learned tokens ("a photo of a <class_i> shoe")
            instead of the class name.
    """

    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    uses_concepts: bool = False

    def __post_init__(self):
        self.check_denoising_settings()

    def plan(self, ctx, label, rng, index=0) -> dict:
        return {"prompt": (ctx.class_prompts if self.uses_concepts else ctx.plain_prompts)[label]}

    @torch.no_grad()
    def generate(self, parts, batch: Batch) -> Generated:
        """Images in [-1, 1], one per record, reproducible from each record's seed."""
        cond, uncond = conditions(parts, batch.values("prompt"), self.negative_prompt)
        schedule = self.schedule(parts, self.num_inference_steps)
        model_fn = self.guided_model_fn(parts, cond, uncond, self.guidance_scale, schedule)
        latents = sample(model_fn, initial_noise(parts, batch.records), schedule)
        return Generated.plain(decode(parts, latents))
