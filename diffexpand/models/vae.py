"""Image <-> latent with the VAE's scaling factor, images in [-1, 1]."""

from __future__ import annotations

import contextlib

import torch


def _fp16_safe(vae):
    """SD's VAE overflows in float16: under float16 autocast it runs outside autocast, in its own dtype
    (float32 unless the caller chose otherwise). bfloat16 has float32's range and stays on."""
    device_type = vae.device.type
    if torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16:
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def encode_images(vae, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
    """Scaled latents of images in [-1, 1] (the posterior mean unless `sample`)."""
    with _fp16_safe(vae):
        posterior = vae.encode(images.to(vae.dtype)).latent_dist
    latents = posterior.sample(generator) if sample else posterior.mean
    return latents * vae.config.scaling_factor


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] from scaled latents (not clamped: the caller decides)."""
    with _fp16_safe(vae):
        return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (B, C, H, W) -> uint8 (B, H, W, C) on CPU, rounding like PIL/diffusers."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu()
