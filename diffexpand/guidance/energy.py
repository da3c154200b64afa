"""Distribution-aware energy guidance (DistDiff, Zhu et al. 2024), as a latent hook for the sampler.

At a guidance step the current latent z is replaced by a transformed latent found by gradient descent
on the energy of where it leads (the caller's `energy_of`: roll the sampler forward P steps, decode
each step's x̂0, extract features, score them against the prototypes; see `prototype_energy`).

Variants (`variant`):
  residual       the official code's `transform_guidance`: channel-wise α ~ U[0, 1), β ~ N(0, 1) (drawn
                 by the caller from each sample's seed), z' = z·(1 + α) + β; `iterations` steps of size ρ
                 on (α, β) against the energy of z'; the result z·(1 + α) + β is projected into the L∞
                 ball of radius ε around z (`linfball_proj`).
  residual_zero  the same transform started at α = β = 0, with (α, β) themselves clamped to [−ε, ε]
                 after each step (this project's form before it matched the official code).
  direct         an additive offset δ on z (zero start), clamped to [−ε, ε] after each step.

A sample whose gradient or energy is not finite keeps its latent unchanged (guidance off for it) and is
flagged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

VARIANTS = ("residual", "residual_zero", "direct")
DISTANCES = ("l2", "cosine")


def prototype_energy(
    features: torch.Tensor,
    class_prototypes: torch.Tensor,
    group_prototypes: torch.Tensor | None,
    class_weight: float = 1.0,
    group_weight: float = 1.0,
    distance: str = "l2",
    normalize_features: bool = False,
) -> torch.Tensor:
    """Per-sample energy (B,) of features (B, D) against class prototypes (B, D) and group prototypes
    (B, K, D), or None for the class term only. Prototypes are L2-normalised here.

    distance "l2" (the official `transform_guidance`):
        E = λ_c · ‖f − ĉ‖₂ + λ_g · ‖f − ĝ_k*‖₂,  k* = argmax_k f·ĝ_k
      with f the extractor's features as they are (the official code does not normalise them here;
      `normalize_features=True` does, as its `direct_guidance` does).
    distance "cosine":
        E = λ_c · (1 − cos(f, c)) + λ_g · min_k (1 − cos(f, g_k))
    """
    if distance not in DISTANCES:
        raise ValueError(f"energy distance must be one of {DISTANCES}, got {distance!r}")
    f = features.float()
    if normalize_features or distance == "cosine":
        f = torch.nn.functional.normalize(f, dim=-1)
    c = torch.nn.functional.normalize(class_prototypes.float(), dim=-1)
    energy = class_weight * _distance(f, c, distance)
    if group_prototypes is not None and group_weight != 0:
        g = torch.nn.functional.normalize(group_prototypes.float(), dim=-1)
        nearest = torch.einsum("bd,bkd->bk", f, g).argmax(-1)  # the same group for both distances
        chosen = g[torch.arange(len(g), device=g.device), nearest]
        energy = energy + group_weight * _distance(f, chosen, distance)
    return energy


def _distance(f: torch.Tensor, p: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "l2":
        return (f - p).norm(dim=-1)
    return 1 - (f * p).sum(-1)


@dataclass
class GuidanceResult:
    latents: torch.Tensor  # guided latents
    energy: torch.Tensor  # (B,) energy of the starting point (z' before the first step)
    failed: torch.Tensor  # (B,) bool: non-finite gradient or energy, latent left unchanged
    params: list[torch.Tensor]  # [α, β] (residual variants) or [δ] (direct) after the last step


@dataclass
class EnergyGuidance:
    step_size: float = 10.0  # ρ
    bound: float = 0.2  # ε, the L∞ radius (see the module docstring for what it bounds)
    iterations: int = 1
    variant: str = "residual"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"guidance variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.bound < 0 or self.step_size < 0 or self.iterations < 1:
            raise ValueError("guidance needs step_size >= 0, bound >= 0 and iterations >= 1")

    def initial_params(self, latents: torch.Tensor, start: list[torch.Tensor] | None) -> list[torch.Tensor]:
        b, ch = latents.shape[:2]
        if self.variant == "residual":
            if start is None:
                raise ValueError("the residual variant starts from random (α, β): pass them as `start`")
            return [p.to(latents.device, torch.float32).reshape(b, ch, 1, 1) for p in start]
        if self.variant == "residual_zero":
            return [latents.new_zeros(b, ch, 1, 1, dtype=torch.float32) for _ in range(2)]
        return [torch.zeros_like(latents, dtype=torch.float32)]

    def apply(
        self,
        latents: torch.Tensor,
        energy_of: Callable[[torch.Tensor], torch.Tensor],
        start: list[torch.Tensor] | None = None,
    ) -> GuidanceResult:
        """Guide `latents`; `energy_of(z)` maps candidate latents at this step to per-sample energies.
        `start`: (α, β) of shape (B, C) for the residual variant."""
        z = latents.detach().float()
        params = self.initial_params(z, start)
        failed = torch.zeros(len(z), dtype=torch.bool, device=z.device)
        first = None
        for _ in range(self.iterations):
            params = [p.detach().requires_grad_(True) for p in params]
            with torch.enable_grad():
                energy = energy_of(self._transform(z, params).to(latents.dtype))
                grads = torch.autograd.grad(energy.sum(), params)
            first = energy.detach() if first is None else first
            finite = torch.stack([g.flatten(1).isfinite().all(1) for g in grads]).all(0)
            failed |= ~finite | ~energy.detach().isfinite()
            off = failed.view(-1, 1, 1, 1)  # params are (B, C, 1, 1) or (B, C, H, W)
            params = [
                p - self.step_size * torch.where(off, 0.0, torch.nan_to_num(g))
                for p, g in zip(params, grads, strict=True)
            ]
            if self.variant != "residual":
                params = [p.clamp(-self.bound, self.bound) for p in params]
        params = [p.detach() for p in params]
        guided = self._transform(z, params)
        if self.variant == "residual":  # linfball_proj of the transformed latent around z
            guided = torch.maximum(torch.minimum(guided, z + self.bound), z - self.bound)
        guided = torch.where(failed.view(-1, 1, 1, 1), z, guided)
        return GuidanceResult(guided.to(latents.dtype), first, failed, params)

    def _transform(self, z: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        if self.variant == "direct":
            return z + params[0]
        alpha, beta = params
        return z * (1 + alpha) + beta
