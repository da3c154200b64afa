"""Real-Gen / txt2img: sample each class from its prompt alone, starting from seeded noise."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffexpand.sampling import Schedule, cfg_model_fn, ddim_sample

from .base import ExpansionMethod
from .common import conditions, decode, initial_noise
from .registry import register_method


@register_method("txt2img")
@dataclass
class Txt2Img(ExpansionMethod):
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    use_concepts: bool = False  # True: "a photo of a <class_i> shoe" instead of the class name

    def __post_init__(self):
        self.uses_concepts = self.use_concepts

    def plan(self, ctx, label, rng, index=0) -> dict:
        return {"prompt": (ctx.class_prompts if self.use_concepts else ctx.plain_prompts)[label]}

    @torch.no_grad()
    def generate(self, parts, records: list[dict]) -> torch.Tensor:
        """Images in [-1, 1], one per record, reproducible from each record's seed."""
        cond, uncond = conditions(parts, [r["prompt"] for r in records], self.negative_prompt)
        schedule = Schedule.from_scheduler(parts.scheduler, self.num_inference_steps)
        model_fn = cfg_model_fn(parts.unet, cond, uncond, self.guidance_scale)
        return decode(parts, ddim_sample(model_fn, initial_noise(parts, records), schedule))
