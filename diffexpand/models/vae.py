"""Image <-> latent with the VAE's scaling factor, images in [-1, 1]."""

from __future__ import annotations

import torch


def _outside_autocast(vae):
    """The VAE runs outside autocast, in its own dtype (float32 unless the caller chose otherwise).
    Under float16 SD's VAE overflows; under bfloat16 its kernels round differently at different batch
    sizes (by several intensity levels between a batch of 1 and of 8: docs/measurements/2026-11-25.md),
    and its output is the image itself. It is a small share of the work (the UNet runs every
    step, the VAE once per image, a few times under DistDiff's guidance), so float32 costs little and keeps
    images equal across batch sizes."""
    return torch.autocast(vae.device.type, enabled=False)


def encode_images(vae, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
    """Scaled latents of images in [-1, 1] (the posterior mean unless `sample`)."""
    with _outside_autocast(vae):
        posterior = vae.encode(images.to(vae.dtype)).latent_dist
    latents = posterior.sample(generator) if sample else posterior.mean
    return latents * vae.config.scaling_factor


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] from scaled latents (not clamped: the caller decides)."""
    with _outside_autocast(vae):
        return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (B, C, H, W) -> uint8 (B, H, W, C) on CPU, rounding like PIL/diffusers."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu()
