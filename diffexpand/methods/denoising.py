"""The denoising settings every method that samples with classifier-free guidance shares: which solver
walks the trajectory, and where along it guidance applies."""

from __future__ import annotations

from dataclasses import dataclass, field

from diffexpand.sampling import (
    ModelFn,
    Schedule,
    cfg_model_fn,
    check_interval,
    check_solver,
    schedule_for,
    steps_in_interval,
)


@dataclass(kw_only=True)  # after each method's own fields: `Txt2Img(25, 7.5)` keeps its meaning
class DenoisingSettings:
    """
    Args:
        solver: the solver of the denoising trajectory: "ddim", or diffusers' multistep solvers
            "dpmpp_2m" (DPM-Solver++ 2M) and "unipc", which reach DDIM's quality in fewer steps.
        guidance_interval: [lo, hi] as fractions of the noise schedule (t / T): classifier-free
            guidance applies at the steps whose timestep lies inside; at the others only the
            conditional branch runs (half a guided step's UNet work). [0, 1]: every step, as the papers.
    """

    solver: str = "ddim"
    guidance_interval: list[float] = field(default_factory=lambda: [0.0, 1.0])

    def check_denoising_settings(self) -> None:
        check_solver(self.solver)
        check_interval(self.guidance_interval)

    def schedule(self, parts, num_inference_steps: int) -> Schedule:
        return schedule_for(parts.scheduler, num_inference_steps, self.solver)

    def guided_model_fn(self, parts, cond, uncond, guidance_scale, schedule: Schedule) -> ModelFn:
        """Classifier-free guidance at the steps of `schedule` inside `guidance_interval`."""
        guided = steps_in_interval(
            schedule.timesteps, tuple(self.guidance_interval), parts.scheduler.config.num_train_timesteps
        )
        return cfg_model_fn(parts.unet, cond, uncond, guidance_scale, guided)
