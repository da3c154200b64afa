"""Distribution-aware energy guidance (DistDiff, Zhu et al. 2024), as a latent hook for the sampler.

At a guidance step the current latent z is replaced by the residual multiplicative transform
z' = z·(1 + α) + β with channel-wise α, β (B, C, 1, 1), found by gradient descent on the energy of
where z' leads: roll the sampler forward P steps from z', predict x̂0, decode it, extract features,
and score them against the sample's class prototype and its nearest group prototype:

    E = λ_c · (1 − cos(f, c)) + λ_g · min_k (1 − cos(f, g_k))

(α, β) take `iterations` steps of size ρ and are projected into the L∞ ball of radius ε after each.
The "direct" variant takes the same steps on an additive latent offset δ instead. A sample whose
gradient is not finite keeps its latent unchanged (guidance off for it) and is flagged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

VARIANTS = ("residual", "direct")


def prototype_energy(
    features: torch.Tensor, class_prototypes: torch.Tensor, group_prototypes: torch.Tensor,
    class_weight: float = 1.0, group_weight: float = 1.0,
) -> torch.Tensor:  # fmt: skip
    """Per-sample energy (B,) of features (B, D) against prototypes (B, D) and (B, K, D)."""
    f = torch.nn.functional.normalize(features.float(), dim=-1)
    c = torch.nn.functional.normalize(class_prototypes.float(), dim=-1)
    g = torch.nn.functional.normalize(group_prototypes.float(), dim=-1)
    to_class = 1 - (f * c).sum(-1)
    to_group = (1 - torch.einsum("bd,bkd->bk", f, g)).min(-1).values
    return class_weight * to_class + group_weight * to_group


@dataclass
class GuidanceResult:
    latents: torch.Tensor  # guided latents
    energy: torch.Tensor  # (B,) energy before guidance
    failed: torch.Tensor  # (B,) bool: non-finite gradient or energy, latent left unchanged
    params: list[torch.Tensor]  # [α, β] (residual) or [δ] (direct), within the L∞ bound


@dataclass
class EnergyGuidance:
    step_size: float = 10.0  # ρ
    bound: float = 0.2  # ε, L∞ radius of (α, β) (or δ)
    iterations: int = 1
    variant: str = "residual"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"guidance variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.bound < 0 or self.step_size < 0 or self.iterations < 1:
            raise ValueError("guidance needs step_size >= 0, bound >= 0 and iterations >= 1")

    def apply(
        self, latents: torch.Tensor, energy_of: Callable[[torch.Tensor], torch.Tensor]
    ) -> GuidanceResult:
        """Guide `latents`; `energy_of(z)` maps candidate latents at this step to per-sample energies."""
        z = latents.detach().float()
        b, ch = z.shape[:2]
        if self.variant == "residual":
            params = [torch.zeros(b, ch, 1, 1, device=z.device), torch.zeros(b, ch, 1, 1, device=z.device)]
        else:
            params = [torch.zeros_like(z)]
        failed = torch.zeros(b, dtype=torch.bool, device=z.device)
        first = None
        for _ in range(self.iterations):
            params = [p.detach().requires_grad_(True) for p in params]
            with torch.enable_grad():
                energy = energy_of(self._transform(z, params).to(latents.dtype))
                grads = torch.autograd.grad(energy.sum(), params)
            first = energy.detach() if first is None else first
            finite = torch.stack([g.flatten(1).isfinite().all(1) for g in grads]).all(0)
            bad = ~finite | ~energy.detach().isfinite()
            failed |= bad
            off = failed.view(-1, 1, 1, 1)  # params are (B, C, 1, 1) or (B, C, H, W)
            params = [
                (p - self.step_size * torch.where(off, 0.0, torch.nan_to_num(g))).clamp(
                    -self.bound, self.bound
                )
                for p, g in zip(params, grads, strict=True)
            ]
        params = [torch.where(failed.view(-1, 1, 1, 1), 0.0, p.detach()) for p in params]
        return GuidanceResult(self._transform(z, params).to(latents.dtype), first, failed, params)

    def _transform(self, z: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        if self.variant == "residual":
            alpha, beta = params
            return z * (1 + alpha) + beta
        return z + params[0]


STAGES = ("chaos", "semantic", "refinement")


def resolve_guidance_steps(spec, sampled_steps: int, rollout_steps: int) -> list[int]:
    """Guidance step indices within the sampled part of the trajectory (0 = its first, noisiest step).

    `spec` is an index, a stage name — "chaos", "semantic", "refinement": the middle of the first,
    second or last third of the sampled steps — or a list of those. Every step needs `rollout_steps`
    more steps after it; one that does not fit is an error, never a silent no-op."""
    items = spec if isinstance(spec, list | tuple) else [spec]
    if not items:
        raise ValueError("give at least one guidance step (an index or a stage name)")
    last = sampled_steps - rollout_steps
    steps = []
    for item in items:
        if isinstance(item, str) and not item.lstrip("-").isdigit():
            if item not in STAGES:
                raise ValueError(f"guidance stage must be one of {STAGES} or a step index, got {item!r}")
            step = min(round((2 * STAGES.index(item) + 1) * sampled_steps / 6), last)
        else:
            step = int(item)
        if not 0 <= step <= last:
            raise ValueError(
                f"guidance step {item!r} lies outside the sampled range: with {sampled_steps} sampled steps "
                f"and rollout_steps={rollout_steps} it must be in [0, {last}] (steps count from the first "
                "denoising step after the img2img start)"
            )
        steps.append(step)
    return sorted(set(steps))
