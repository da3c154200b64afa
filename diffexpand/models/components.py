"""The five parts of a Stable-Diffusion-style model, held together."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer


@dataclass
class SDComponents:
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler: DDIMScheduler

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"text_encoder": self.text_encoder, "vae": self.vae, "unet": self.unet}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        for module in self.modules.values():
            module.to(device=device, dtype=dtype)
        return self

    def requires_grad_(self, flag: bool):
        for module in self.modules.values():
            module.requires_grad_(flag)
        return self

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along one side (8 for SD 1.x)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def save_pretrained(self, folder, dtype: torch.dtype | None = None) -> None:
        """Write a diffusers-layout folder that `StableDiffusionPipeline.from_pretrained` loads."""
        from diffusers import StableDiffusionPipeline

        parts = self
        if dtype is not None:  # cast a copy, so the caller's modules keep their precision
            parts = copy.deepcopy(self)
            for module in parts.modules.values():
                for tensor in (*module.parameters(), *module.buffers()):
                    if tensor.is_floating_point():
                        tensor.data = tensor.data.to(dtype)
        pipe = StableDiffusionPipeline(
            vae=parts.vae,
            text_encoder=parts.text_encoder,
            tokenizer=parts.tokenizer,
            unet=parts.unet,
            scheduler=parts.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(folder, safe_serialization=True)
