"""Classifier-free guidance (Ho & Salimans 2022) as a ModelFn wrapper around a conditional UNet."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .ddim import ModelFn

# Text conditioning per step: one tensor for the whole trajectory, or a function of the step index
# (Diff-II switches prompts part-way through).
Conditioning = torch.Tensor | Callable[[int], torch.Tensor]


def _at(cond: Conditioning, step_index: int) -> torch.Tensor:
    return cond(step_index) if callable(cond) else cond


def cfg_model_fn(
    unet: torch.nn.Module,
    cond: Conditioning,
    uncond: Conditioning | None,
    guidance_scale: float | torch.Tensor,
    guided_steps: frozenset[int] | None = None,
) -> ModelFn:
    """ε̃ = ε(∅) + w·(ε(c) − ε(∅)), both branches in one batched UNet call.

    `guidance_scale` may be a per-sample tensor of shape (B,). At w = 1 (or with no unconditional
    embedding) only the conditional branch runs. `guided_steps`: the step indices where guidance
    applies (None: all); at the others only the conditional branch runs (`steps_in_interval`).
    """
    scale = torch.as_tensor(guidance_scale, dtype=torch.float32)
    plain = uncond is None or bool((scale == 1.0).all())
    on_device: dict = {}  # the scale moved to the latents' device once, not once per step

    def weight(x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in on_device:
            on_device[key] = scale.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return on_device[key]

    def model_fn(x: torch.Tensor, t: torch.Tensor, step_index: int) -> torch.Tensor:
        c = _at(cond, step_index)
        t_batch = t.expand(x.shape[0]) if t.ndim == 0 else t
        if plain or (guided_steps is not None and step_index not in guided_steps):
            return unet(x, t_batch, encoder_hidden_states=c).sample
        u = _at(uncond, step_index)
        out = unet(
            torch.cat([x, x]), torch.cat([t_batch, t_batch]), encoder_hidden_states=torch.cat([u, c])
        ).sample
        out_uncond, out_cond = out.chunk(2)
        return out_uncond + weight(x) * (out_cond - out_uncond)

    return model_fn


def steps_in_interval(
    timesteps: torch.Tensor, interval: tuple[float, float], num_train_timesteps: int
) -> frozenset[int] | None:
    """The indices of the steps whose timestep t has t / T inside [lo, hi] (Kynkäänniemi et al. 2024,
    "Applying guidance in a limited interval", with the interval in t instead of σ); None when the
    interval holds the whole schedule, so guidance runs at every step."""
    lo, hi = check_interval(interval)
    if lo == 0.0 and hi == 1.0:
        return None
    fractions = timesteps.double().cpu() / num_train_timesteps
    return frozenset(i for i, f in enumerate(fractions.tolist()) if lo <= f <= hi)


def check_interval(interval) -> tuple[float, float]:
    if len(interval) != 2 or not 0.0 <= interval[0] < interval[1] <= 1.0:
        raise ValueError(f"guidance_interval must be [lo, hi] with 0 <= lo < hi <= 1, got {list(interval)}")
    return float(interval[0]), float(interval[1])
