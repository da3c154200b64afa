"""The multistep solvers (diffusers' DPM-Solver++ 2M and UniPC behind `sample`) and the guidance
interval: against stock diffusers, against the exact ODE solution of a Gaussian world, and through
the methods."""

import math

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UniPCMultistepScheduler,
)

from diffexpand.models.text import encode_prompts
from diffexpand.models.tiny import SD_SCHEDULER_CONFIG
from diffexpand.sampling import (
    add_noise,
    cfg_model_fn,
    check_solver,
    sample,
    schedule_for,
    sdedit_start_index,
    steps_in_interval,
)

BASE = DDIMScheduler(**SD_SCHEDULER_CONFIG)
STOCK = {"dpmpp_2m": DPMSolverMultistepScheduler, "unipc": UniPCMultistepScheduler}


def gaussian_world(scale: float):
    """The exact ε-prediction for data N(0, scale² I): ε(x, ᾱ) = x·√(1−ᾱ) / (ᾱ·scale² + 1 − ᾱ)."""

    def model_fn(x, t, i):
        a = float(BASE.alphas_cumprod[int(t)])
        return x * math.sqrt(1 - a) / (a * scale**2 + 1 - a)

    return model_fn


def exact_flow(x, alpha_from: float, alpha_to: float, scale: float):
    """The probability-flow ODE of that world keeps x / √(ᾱ·scale² + 1 − ᾱ) constant."""
    std_to, std_from = (math.sqrt(a * scale**2 + 1 - a) for a in (alpha_to, alpha_from))
    return x * std_to / std_from


@pytest.mark.parametrize("solver", ["dpmpp_2m", "unipc"])
def test_solver_timesteps_are_those_diffusers_gives_the_model_config(solver):
    for steps in (8, 25):
        stock = STOCK[solver].from_config(BASE.config)
        stock.set_timesteps(steps)
        schedule = schedule_for(BASE, steps, solver)
        assert torch.equal(schedule.timesteps, stock.timesteps.long()) and schedule.solver == solver
    assert torch.equal(schedule_for(BASE, 25).timesteps, schedule_for(BASE, 25, "ddim").timesteps)


@pytest.mark.parametrize("solver", ["dpmpp_2m", "unipc"])
def test_multistep_solvers_beat_ddim_at_few_steps_on_an_exact_ode(solver):
    """In a world whose ODE is known exactly, the second-order solvers end closer to the exact end
    point than DDIM in 8 steps, and all three agree with it at 50. (With data narrower than the noise,
    scale < 1, diffusers' leading timestep spacing makes the last steps dominate and the solvers are
    no better than DDIM: 0.23 for all three at 8 steps, scale 0.5.)"""
    scale = 2.0
    x_t = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = {}
    for name in ("ddim", solver):
        for steps in (8, 50):
            schedule = schedule_for(BASE, steps, name)
            out = sample(gaussian_world(scale), x_t, schedule)
            target = exact_flow(x_t, schedule.alpha(0), schedule.alpha(steps), scale)
            errors[name, steps] = ((out - target).norm() / target.norm()).item()
    assert errors[solver, 8] < 0.5 * errors["ddim", 8], errors
    assert max(errors["ddim", 50], errors[solver, 50]) < 0.03, errors


@pytest.mark.parametrize("solver", ["dpmpp_2m", "unipc"])
def test_a_replaced_latent_restarts_the_solver_as_a_fresh_start_from_it(solver):
    """After `before_step` replaces the latents (guidance), `restart_after_replace` makes the rest of the
    run exactly a fresh run started there; without it the solver reuses predictions of the old latents."""
    schedule, k = schedule_for(BASE, 10, solver), 4
    x_t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    world = gaussian_world(2.0)
    seen = {}

    def jump(i, x):  # replaced at step k by a moved copy, as a guided latent is
        if i != k:
            return x
        seen["x"] = x * 1.05
        return seen["x"].clone()

    restarted = sample(world, x_t, schedule, before_step=jump, restart_after_replace=True)
    fresh = sample(world, seen["x"], schedule, start_index=k)
    kept = sample(world, x_t, schedule, before_step=jump)
    torch.testing.assert_close(restarted, fresh, rtol=0, atol=1e-12)
    assert (kept - fresh).abs().max() > 1e-6
    untouched = sample(world, x_t, schedule, before_step=lambda i, x: x, restart_after_replace=True)
    torch.testing.assert_close(untouched, sample(world, x_t, schedule), rtol=0, atol=0)


@pytest.mark.parametrize("solver", ["ddim", "dpmpp_2m", "unipc"])
def test_every_solver_follows_a_v_prediction_model(solver):
    """The tiny prior v2 predicts v = √ᾱ·ε − √(1−ᾱ)·x0: in the Gaussian world, a model giving the
    exact v for a v-prediction schedule ends where the exact ODE does, with every solver."""
    scale = 2.0
    v_config = DDIMScheduler(**{**SD_SCHEDULER_CONFIG, "prediction_type": "v_prediction"})
    eps_fn = gaussian_world(scale)

    def v_world(x, t, i):
        a = float(BASE.alphas_cumprod[int(t)])
        eps = eps_fn(x, t, i)
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        return math.sqrt(a) * eps - math.sqrt(1 - a) * x0

    x_t = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    schedule = schedule_for(v_config, 50, solver)
    assert schedule.prediction_type == "v_prediction"
    out = sample(v_world, x_t, schedule)
    target = exact_flow(x_t, schedule.alpha(0), schedule.alpha(50), scale)
    assert ((out - target).norm() / target.norm()).item() < 0.03
    # the same model read as ε-prediction ends far off: the schedule's prediction type is what is used
    wrong = sample(v_world, x_t, schedule_for(BASE, 50, solver))
    assert ((wrong - target).norm() / target.norm()).item() > 0.3


@pytest.mark.parametrize("solver", ["dpmpp_2m", "unipc"])
def test_sdedit_start_walks_the_solvers_own_levels(solver):
    """Started part-way (SDEdit), a solver walks from the level `schedule.alpha(start)` the caller
    noised to: a point-mass world (ε exact for x0 = c) comes back to c."""
    c = torch.full((2, 4, 8, 8), 0.7)
    schedule = schedule_for(BASE, 10, solver)
    start = sdedit_start_index(0.5, 10)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    x = add_noise(c, noise, schedule.alpha(start))

    def point_mass(x, t, i):
        a = float(BASE.alphas_cumprod[int(t)])
        return (x - math.sqrt(a) * c) / math.sqrt(1 - a)

    torch.testing.assert_close(sample(point_mass, x, schedule, start), c, atol=1e-4, rtol=0)


@pytest.mark.parametrize("solver", ["dpmpp_2m", "unipc"])
def test_txt2img_with_a_solver_matches_a_stock_pipeline(tiny_sd, tiny_sd_dir, solver):
    """The same latents and prompt through our sampler and through StableDiffusionPipeline with the
    scheduler swapped the diffusers way give the same latents."""
    parts = tiny_sd
    cond = encode_prompts(parts.tokenizer, parts.text_encoder, ["a photo of a shoe"] * 2)
    uncond = encode_prompts(parts.tokenizer, parts.text_encoder, [""] * 2)
    shape = (2, parts.unet.config.in_channels, parts.unet.config.sample_size, parts.unet.config.sample_size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    schedule = schedule_for(parts.scheduler, 6, solver)
    with torch.no_grad():
        ours = sample(cfg_model_fn(parts.unet, cond, uncond, 5.0), noise, schedule)
    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_sd_dir, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = STOCK[solver].from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    stock = pipe(
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        latents=noise.clone(),
        num_inference_steps=6,
        guidance_scale=5.0,
        output_type="latent",
    ).images
    torch.testing.assert_close(ours, stock, atol=1e-4, rtol=1e-4)


def test_unknown_solver_and_bad_intervals_are_refused():
    with pytest.raises(ValueError, match="unknown solver 'euler'.*ddim, dpmpp_2m, unipc"):
        check_solver("euler")
    for bad in ([0.5, 0.5], [-0.1, 1.0], [0.2], [0.8, 0.3]):
        with pytest.raises(ValueError, match="guidance_interval must be"):
            steps_in_interval(torch.tensor([900, 500, 100]), bad, 1000)


def test_guidance_interval_picks_the_steps_by_timestep():
    timesteps = torch.tensor([961, 801, 601, 401, 201, 1])
    assert steps_in_interval(timesteps, (0.0, 1.0), 1000) is None
    assert steps_in_interval(timesteps, (0.2, 0.85), 1000) == {1, 2, 3, 4}
    assert steps_in_interval(timesteps, (0.0, 0.5), 1000) == {3, 4, 5}


class CountingUNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.batch_sizes = []

    def forward(self, x, t, encoder_hidden_states):
        self.batch_sizes.append(x.shape[0])
        shift = encoder_hidden_states.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
        return type("Out", (), {"sample": 0.1 * x + shift})()


def test_outside_the_interval_only_the_conditional_branch_runs():
    unet = CountingUNet()
    x, cond, uncond = torch.randn(3, 4, 8, 8), torch.randn(3, 77, 16), torch.randn(3, 77, 16)
    fn = cfg_model_fn(unet, cond, uncond, 7.5, guided_steps=frozenset({1}))
    outside, inside = fn(x, torch.tensor(900), 0), fn(x, torch.tensor(500), 1)
    assert unet.batch_sizes == [3, 6]  # half the UNet batch outside the interval
    e_c, e_u = unet(x, None, cond).sample, unet(x, None, uncond).sample
    torch.testing.assert_close(outside, e_c)
    torch.testing.assert_close(inside, e_u + 7.5 * (e_c - e_u))
