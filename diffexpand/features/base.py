"""Image feature extractors for Real-Filter and DistDiff.

Every extractor takes images in [-1, 1] (B, 3, H, W) — what the VAE decodes — and itself resizes and
normalises them exactly as its backbone expects (size, interpolation, mean, std), so gradients flow
from the features back to the latents. DistDiff's official code feeds unnormalised images; we do not.
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureExtractor(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, D) features. Subclasses set `input_size`, `mean`, `std`,
    `interpolation` and implement `embed` on normalised inputs."""

    input_size: int = 224
    interpolation: str = "bicubic"

    def __init__(self, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() + 1) / 2  # [0, 1], as the backbone's mean/std assume
        if x.shape[-2:] != (self.input_size, self.input_size):
            # antialias keeps downscaling faithful; bicubic/bilinear as the backbone was trained
            x = nn.functional.interpolate(
                x,
                size=(self.input_size, self.input_size),
                mode=self.interpolation,
                antialias=True,
                align_corners=False,
            )
        return (x - self.mean) / self.std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(self.preprocess(images))

    def fingerprint(self) -> str:
        """What the features depend on, for cache keys."""
        raise NotImplementedError
