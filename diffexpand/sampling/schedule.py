"""The noise schedule as plain tensors: what every sampler here needs from a diffusers scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Schedule:
    """A descending timestep sequence with the cumulative alphas it walks through, and the solver that
    walks it (`solvers.py`; DDIM unless built with `schedule_for`).

    `alphas_cumprod[t]` is ᾱ_t of the training schedule. `final_alpha_cumprod` is ᾱ after the last
    step (1.0, or ᾱ_0 when the scheduler sets `set_alpha_to_one=False`, as SD does).
    """

    timesteps: torch.Tensor  # (n,) long, descending
    alphas_cumprod: torch.Tensor  # (T,) float64 on CPU
    final_alpha_cumprod: float
    prediction_type: str = "epsilon"
    solver: str = "ddim"
    scheduler_config: dict = field(default_factory=dict)  # the model's, for a multistep solver

    @classmethod
    def from_scheduler(cls, scheduler, num_inference_steps: int) -> Schedule:
        """Any diffusers scheduler with `alphas_cumprod` and `set_timesteps` (DDIM, PNDM, DPM…)."""
        scheduler.set_timesteps(num_inference_steps)
        alphas = scheduler.alphas_cumprod.to(torch.float64).cpu()
        set_to_one = getattr(scheduler.config, "set_alpha_to_one", False)
        return cls(
            timesteps=scheduler.timesteps.to(torch.long).cpu().clone(),
            alphas_cumprod=alphas,
            final_alpha_cumprod=1.0 if set_to_one else float(alphas[0]),
            prediction_type=scheduler.config.prediction_type,
        )

    def __len__(self) -> int:
        return len(self.timesteps)

    def alpha(self, index: int) -> float:
        """ᾱ at step `index` of the sequence; `len(self)` means fully denoised."""
        if index >= len(self.timesteps):
            return self.final_alpha_cumprod
        return float(self.alphas_cumprod[self.timesteps[index]])


def sdedit_start_index(strength: float, num_inference_steps: int) -> int:
    """Index of the first step SDEdit/img2img runs for `strength` (diffusers' img2img convention).

    strength 1.0 starts from pure noise (index 0); 0.0 runs no step at all (index n).
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must lie in [0, 1], got {strength}")
    init_steps = min(int(num_inference_steps * strength), num_inference_steps)
    return num_inference_steps - init_steps


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alpha_cumprod: float) -> torch.Tensor:
    """Forward process q(x_t | x_0) at cumulative alpha ᾱ."""
    return alpha_cumprod**0.5 * x0 + (1.0 - alpha_cumprod) ** 0.5 * noise
