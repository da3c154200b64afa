"""Diff-II's spherical interpolation and extrapolation of two inverted latents.

Unified formula (Diff-II, eq. 7; its eq. 6 is the extrapolation alone):
    Z = sin((1+λ)α)/sin α · I_a − sin(λα)/sin α · I_b,
α = angle between I_a and I_b. λ = 0 gives I_a, λ = −1 gives I_b, and λ ∈ [0, 2π/α] walks once
around the great circle through both — interpolation between them and extrapolation beyond
them. For inputs of equal norm the result keeps that norm, so Gaussian-like inversions stay
Gaussian-like.
"""

from __future__ import annotations

import math

import torch

_EPS = 1e-7


def angle_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample angle α between a[i] and b[i] (flattened), in radians, shape (B,)."""
    a_flat, b_flat = a.flatten(1).double(), b.flatten(1).double()
    cos = (a_flat * b_flat).sum(1) / (a_flat.norm(dim=1) * b_flat.norm(dim=1)).clamp_min(_EPS)
    return cos.clamp(-1.0, 1.0).acos()


def spherical_inter_extrapolate(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """Diff-II's unified slerp Z(λ) for batches a, b of shape (B, ...), λ scalar or (B,)."""
    alpha = angle_between(a, b)
    lam = torch.as_tensor(lam, dtype=torch.float64, device=a.device).expand_as(alpha)
    sin_alpha = alpha.sin()
    if bool((sin_alpha.abs() < 1e-6).any()):
        raise ValueError("spherical interpolation needs two latents that are not (anti)parallel")
    w_a = ((1 + lam) * alpha).sin() / sin_alpha
    w_b = (lam * alpha).sin() / sin_alpha
    shape = (-1,) + (1,) * (a.ndim - 1)
    return (w_a.reshape(shape) * a.double() - w_b.reshape(shape) * b.double()).to(a.dtype)


def lambda_from_fraction(fraction: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """λ = u · 2π/α per pair: Diff-II's λ ~ U[0, 2π/α] from a uniform u in [0, 1) drawn when the
    record was planned (α is only known once the images are inverted)."""
    return fraction.double() * (2 * math.pi / alpha.double())
