"""The five parts of a Stable-Diffusion-style model, held together."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from .identity import ModelIdentity


@dataclass
class SDComponents:
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler: DDIMScheduler
    # Which model the parts were loaded from (diffexpand.models.identity); None for parts built in memory.
    identity: ModelIdentity | None = None

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
        """Write a diffusers-layout folder that `StableDiffusionPipeline.from_pretrained(folder)` loads
        with no dtype argument. With `dtype` the weights are stored in it (a smaller folder), but every
        part's config says float32: diffusers loads the UNet and VAE in float32 by default while
        transformers follows the text encoder's config, so a float16 config there would give a pipeline
        of mixed dtypes that fails on its first matmul."""
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
        if dtype is not None:
            load_in_float32(folder)


def load_in_float32(folder) -> None:
    """Set the dtype that each part's config.json names (transformers reads it) to float32."""
    for config in Path(folder).glob("*/config.json"):
        values = json.loads(config.read_text())
        named = [key for key in ("dtype", "torch_dtype") if key in values]
        if named:
            config.write_text(
                json.dumps(values | dict.fromkeys(named, "float32"), indent=2, sort_keys=True) + "\n"
            )
