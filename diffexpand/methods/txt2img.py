"""Real-Gen / txt2img: sample each class from its prompt alone, starting from seeded noise."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffexpand.models.text import encode_prompts
from diffexpand.models.vae import decode_latents
from diffexpand.sampling import Schedule, cfg_model_fn, ddim_sample
from diffexpand.seeding import seeded_randn

from .registry import register_method


@register_method("txt2img")
@dataclass
class Txt2Img:
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    negative_prompt: str = ""

    def plan(self, record: dict) -> dict:
        """What this method adds to a planned record (nothing random beyond the seed)."""
        return {}

    @torch.no_grad()
    def generate(self, parts, records: list[dict]) -> torch.Tensor:
        """Images in [-1, 1], one per record, reproducible from each record's seed."""
        device = parts.unet.device
        size = parts.unet.config.sample_size
        latents = seeded_randn(
            [r["seed"] for r in records],
            (parts.unet.config.in_channels, size, size),
            device,
            parts.unet.dtype,
        )
        cond = encode_prompts(parts.tokenizer, parts.text_encoder, [r["prompt"] for r in records])
        uncond = encode_prompts(parts.tokenizer, parts.text_encoder, [self.negative_prompt] * len(records))
        schedule = Schedule.from_scheduler(parts.scheduler, self.num_inference_steps)
        model_fn = cfg_model_fn(parts.unet, cond, uncond, self.guidance_scale)
        latents = ddim_sample(model_fn, latents, schedule)
        return decode_latents(parts.vae, latents)
