"""A small but complete Stable-Diffusion-architecture model, sized by a config.

Same classes as SD 1.x (AutoencoderKL, UNet2DConditionModel with cross-attention, CLIPTextModel,
DDIMScheduler, the real CLIP tokenizer), only narrower and shallower, so it trains and runs on a CPU
and exercises every code path that real SD does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .components import SDComponents
from .tokenizer import CLIP_CONTEXT_LENGTH, CLIP_VOCAB_SIZE, build_clip_tokenizer

# Stable Diffusion 1.x's noise schedule, as in its scheduler_config.json.
SD_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


@dataclass
class TinySDConfig:
    """Sizes of the tiny stack. Defaults: 32x32 RGB images -> 8x8x4 latents."""

    image_size: int = 32
    vae_channels: tuple[int, ...] = (32, 64, 64)  # one downsample between consecutive entries
    vae_layers_per_block: int = 1
    latent_channels: int = 4
    vae_scaling_factor: float = 1.0
    unet_channels: tuple[int, ...] = (64, 128)
    unet_layers_per_block: int = 1
    unet_attention_head_dim: int = 8
    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate_size: int = 128
    prediction_type: str = "epsilon"
    seed: int = 0
    scheduler: dict = field(default_factory=dict)  # overrides of SD_SCHEDULER_CONFIG

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)


def build_tiny_vae(cfg: TinySDConfig) -> AutoencoderKL:
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=cfg.vae_layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=min(32, min(cfg.vae_channels)),
        sample_size=cfg.image_size,
        scaling_factor=cfg.vae_scaling_factor,
    )


def build_tiny_unet(cfg: TinySDConfig) -> UNet2DConditionModel:
    n = len(cfg.unet_channels)
    # SD 1.x: cross-attention in every block except the deepest down / first up block.
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    return UNet2DConditionModel(
        sample_size=cfg.latent_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(cfg.unet_channels),
        layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.text_hidden_size,
        attention_head_dim=cfg.unet_attention_head_dim,
        norm_num_groups=min(32, min(cfg.unet_channels)),
    )


def build_tiny_text_encoder(cfg: TinySDConfig) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=cfg.text_hidden_size,
        intermediate_size=cfg.text_intermediate_size,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=CLIP_CONTEXT_LENGTH,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_act="quick_gelu",
    )
    return CLIPTextModel(config)


def build_tiny_scheduler(cfg: TinySDConfig) -> DDIMScheduler:
    return DDIMScheduler(**{**SD_SCHEDULER_CONFIG, "prediction_type": cfg.prediction_type, **cfg.scheduler})


def build_tiny_sd(cfg: TinySDConfig | None = None) -> SDComponents:
    """Fresh, randomly initialised tiny SD stack (seeded, so every machine builds the same one)."""
    cfg = cfg or TinySDConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return SDComponents(
            tokenizer=build_clip_tokenizer(),
            text_encoder=build_tiny_text_encoder(cfg),
            vae=build_tiny_vae(cfg),
            unet=build_tiny_unet(cfg),
            scheduler=build_tiny_scheduler(cfg),
        )


# Stable Diffusion 1.5's architecture in the same terms (its published model configs): 860 M-parameter
# UNet, 84 M VAE, 123 M CLIP ViT-L/14 text encoder, 512 px images -> 64x64x4 latents. Built with random
# weights it times like the real model (speed does not depend on weight values) with no download.
SD15_ARCHITECTURE = TinySDConfig(
    image_size=512,
    vae_channels=(128, 256, 512, 512),
    vae_layers_per_block=2,
    vae_scaling_factor=0.18215,
    unet_channels=(320, 640, 1280, 1280),
    unet_layers_per_block=2,
    unet_attention_head_dim=8,
    text_hidden_size=768,
    text_layers=12,
    text_heads=12,
    text_intermediate_size=3072,
)
