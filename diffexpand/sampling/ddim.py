"""DDIM sampling and inversion as short pure functions (Song et al. 2021, eq. 12 with η = 0).

A `ModelFn` maps (x_t, t, step_index) to the network output in the schedule's parameterisation
(ε or v). Classifier-free guidance, prompt switching and energy guidance are all wrappers around a
ModelFn, so the samplers stay ignorant of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .schedule import Schedule

ModelFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def predict_x0_eps(
    model_output: torch.Tensor, sample: torch.Tensor, alpha_cumprod, prediction_type: str = "epsilon"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂0, ε̂) from the network output at cumulative alpha ᾱ; differentiable in all inputs."""
    sqrt_a, sqrt_1ma = _sqrt_pair(alpha_cumprod, sample)
    if prediction_type == "epsilon":
        eps = model_output
        x0 = (sample - sqrt_1ma * eps) / sqrt_a
    elif prediction_type == "v_prediction":
        x0 = sqrt_a * sample - sqrt_1ma * model_output
        eps = sqrt_a * model_output + sqrt_1ma * sample
    elif prediction_type == "sample":
        x0 = model_output
        eps = (sample - sqrt_a * x0) / sqrt_1ma
    else:
        raise ValueError(f"unknown prediction_type {prediction_type!r} (epsilon, v_prediction, sample)")
    return x0, eps


def ddim_step(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    alpha_from,
    alpha_to,
    prediction_type: str = "epsilon",
) -> torch.Tensor:
    """Deterministic DDIM move from noise level ᾱ_from to ᾱ_to (either direction: this is also the
    inversion step)."""
    x0, eps = predict_x0_eps(model_output, sample, alpha_from, prediction_type)
    sqrt_a, sqrt_1ma = _sqrt_pair(alpha_to, sample)
    return sqrt_a * x0 + sqrt_1ma * eps


def _sqrt_pair(alpha_cumprod, like: torch.Tensor):
    """(√ᾱ, √(1−ᾱ)); a Python float stays a float, so a sampling step makes no host-to-device copy."""
    if isinstance(alpha_cumprod, float | int):
        return math.sqrt(alpha_cumprod), math.sqrt(1.0 - alpha_cumprod)
    a = torch.as_tensor(alpha_cumprod, dtype=like.dtype, device=like.device)
    return a.sqrt(), (1 - a).sqrt()


def ddim_sample(
    model_fn: ModelFn,
    latents: torch.Tensor,
    schedule: Schedule,
    start_index: int = 0,
    progress: Callable | None = None,
    before_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Denoise `latents` (at the noise level of step `start_index`) down to x_0 with DDIM.
    `before_step(i, latents)` may replace the latents before step i (latent guidance hooks in here)."""

    def step(out: torch.Tensor, t: torch.Tensor, i: int, x: torch.Tensor) -> torch.Tensor:
        return ddim_step(out, x, schedule.alpha(i), schedule.alpha(i + 1), schedule.prediction_type)

    timesteps = schedule.timesteps.to(latents.device)  # once, not one copy per step
    return denoise_loop(model_fn, step, latents, timesteps, start_index, progress, before_step)


def denoise_loop(
    model_fn: ModelFn,
    step: Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    start_index: int = 0,
    progress: Callable | None = None,
    before_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The sampling loop every solver shares: from step `start_index` on, the optional latent hook,
    the network at (latents, t, i), then `step(out, t, i, latents)` to the next noise level."""
    steps = range(start_index, len(timesteps))
    for i in progress(steps) if progress else steps:
        if before_step is not None:
            latents = before_step(i, latents)
        t = timesteps[i]
        latents = step(model_fn(latents, t, i), t, i, latents)
    return latents


def ddim_invert(
    model_fn: ModelFn,
    latents: torch.Tensor,
    schedule: Schedule,
    stop_index: int = 0,
    progress: Callable | None = None,
) -> torch.Tensor:
    """DDIM inversion: walk clean latents up the same timestep sequence to step `stop_index`.

    Each step evaluates the network at the current latent with the next (noisier) timestep, the usual
    approximation ε(x_{t+1}, t+1) ≈ ε(x_t, t+1). The result, sampled back from `stop_index` with the
    same conditioning, approximately returns the input.
    """
    steps = range(len(schedule) - 1, stop_index - 1, -1)
    timesteps = schedule.timesteps.to(latents.device)
    for i in progress(steps) if progress else steps:
        t = timesteps[i]
        out = model_fn(latents, t, i)
        latents = ddim_step(out, latents, schedule.alpha(i + 1), schedule.alpha(i), schedule.prediction_type)
    return latents
