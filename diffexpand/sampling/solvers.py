"""Which ODE solver walks a trajectory: DDIM (ours, `ddim.py`) or one of diffusers' multistep solvers.

DPM-Solver++ 2M (Lu et al. 2022) and UniPC (Zhao et al. 2023) reuse the previous step's prediction to
reach DDIM's quality in fewer network calls. They are diffusers' own schedulers, built from the model's
noise-schedule config the way a diffusers user swaps `pipe.scheduler`, so their timesteps are diffusers'
choice for that config (not DDIM's). A `Schedule` made with `schedule_for(…, solver)` carries those
timesteps, so every caller that reads ᾱ at a step (SDEdit's start noise, energy guidance) sees the levels
the solver walks.

Both solvers are deterministic given the start latent and apply the same update to every sample in a
batch, so seeded reproducibility and batch-size independence hold as for DDIM.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from .ddim import ModelFn, ddim_sample, denoise_loop
from .schedule import Schedule

# name -> (diffusers scheduler class, settings over the model's config)
MULTISTEP = {
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": (UniPCMultistepScheduler, {"solver_order": 2}),
}
SOLVERS = ("ddim", *MULTISTEP)


def check_solver(name: str) -> str:
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}")
    return name


def schedule_for(base_scheduler, num_inference_steps: int, solver: str = "ddim") -> Schedule:
    """The timesteps `solver` walks in `num_inference_steps` steps on the model's noise schedule."""
    if check_solver(solver) == "ddim":
        return Schedule.from_scheduler(base_scheduler, num_inference_steps)
    schedule = Schedule.from_scheduler(
        _multistep_scheduler(solver, base_scheduler.config), num_inference_steps
    )
    return dataclasses.replace(
        schedule,
        final_alpha_cumprod=1.0,  # the solvers' last step lands on σ = 0 (`final_sigmas_type="zero"`)
        solver=solver,
        scheduler_config=dict(base_scheduler.config),
    )


def _multistep_scheduler(solver: str, config):
    cls, settings = MULTISTEP[solver]
    return cls.from_config(config, **settings)


def sample(
    model_fn: ModelFn,
    latents: torch.Tensor,
    schedule: Schedule,
    start_index: int = 0,
    progress: Callable | None = None,
    before_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    restart_after_replace: bool = False,
) -> torch.Tensor:
    """Denoise `latents` (at the noise level of step `start_index`) to x_0 with the schedule's solver.
    `before_step(i, latents)` may replace the latents before step i, as in `ddim_sample`: it returns the
    tensor it was given when it leaves them alone. `restart_after_replace`: a multistep solver forgets its
    history when they are replaced, so the step from the new latents is first order (DDIM's, for
    DPM-Solver++) and UniPC's corrector does not pull them back toward the old trajectory."""
    if schedule.solver == "ddim":
        return ddim_sample(model_fn, latents, schedule, start_index, progress, before_step)
    # A fresh scheduler per call: a multistep solver keeps the last predictions as state.
    scheduler = _multistep_scheduler(schedule.solver, schedule.scheduler_config)
    scheduler.set_timesteps(len(schedule), device=latents.device)
    if not torch.equal(scheduler.timesteps.cpu().long(), schedule.timesteps):
        raise ValueError(f"{schedule.solver}: timesteps differ from the schedule (use schedule_for)")
    scheduler.set_begin_index(start_index)

    def step(out: torch.Tensor, t: torch.Tensor, i: int, x: torch.Tensor) -> torch.Tensor:
        return scheduler.step(out, t, x).prev_sample

    hook = before_step
    if before_step is not None and restart_after_replace:

        def hook(i: int, x: torch.Tensor) -> torch.Tensor:
            new = before_step(i, x)
            if new is not x:
                forget_history(scheduler)
            return new

    return denoise_loop(model_fn, step, latents, scheduler.timesteps, start_index, progress, hook)


def forget_history(scheduler) -> None:
    """Make a diffusers multistep scheduler's next step its first: no earlier prediction (the warm-up
    path both solvers take at the start) and, for UniPC, no corrector against the previous sample."""
    order = scheduler.config.solver_order
    scheduler.model_outputs = [None] * order
    scheduler.lower_order_nums = 0
    if hasattr(scheduler, "last_sample"):  # UniPC
        scheduler.last_sample = None
        scheduler.timestep_list = [None] * order
