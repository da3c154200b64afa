"""The sampling core against diffusers and against its own mathematical properties."""

import math

import pytest
import torch
from diffusers import DDIMScheduler

from diffexpand.models.text import encode_prompts
from diffexpand.models.tiny import SD_SCHEDULER_CONFIG
from diffexpand.sampling import (
    Schedule,
    angle_between,
    cfg_model_fn,
    ddim_invert,
    ddim_sample,
    ddim_step,
    lambda_from_fraction,
    predict_x0_eps,
    sdedit_start_index,
    spherical_inter_extrapolate,
)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("num_steps", [10, 25, 50])
def test_ddim_step_matches_diffusers(prediction_type, num_steps):
    scheduler = DDIMScheduler(**{**SD_SCHEDULER_CONFIG, "prediction_type": prediction_type})
    schedule = Schedule.from_scheduler(scheduler, num_steps)
    g = torch.Generator().manual_seed(num_steps)
    for i, t in enumerate(schedule.timesteps):
        x, out = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
        expected = scheduler.step(out, t, x, eta=0.0).prev_sample
        ours = ddim_step(out, x, schedule.alpha(i), schedule.alpha(i + 1), prediction_type)
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_final_alpha_follows_set_alpha_to_one():
    sd = Schedule.from_scheduler(DDIMScheduler(**SD_SCHEDULER_CONFIG), 25)
    one = Schedule.from_scheduler(DDIMScheduler(**{**SD_SCHEDULER_CONFIG, "set_alpha_to_one": True}), 25)
    assert sd.final_alpha_cumprod == pytest.approx(float(sd.alphas_cumprod[0]))
    assert one.final_alpha_cumprod == 1.0


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_x0_eps_parameterisations_are_consistent(prediction_type):
    """Build x_t from known (x0, ε), express the network output in each parameterisation, recover both."""
    g = torch.Generator().manual_seed(0)
    x0, eps, a = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g), 0.3
    xt = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    output = {"epsilon": eps, "v_prediction": math.sqrt(a) * eps - math.sqrt(1 - a) * x0, "sample": x0}
    x0_hat, eps_hat = predict_x0_eps(output[prediction_type], xt, a, prediction_type)
    torch.testing.assert_close(x0_hat, x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(eps_hat, eps, atol=1e-5, rtol=0)


def test_gradients_flow_through_x0_prediction():
    xt = torch.randn(2, 4, 8, 8, requires_grad=True)
    out = torch.randn(2, 4, 8, 8, requires_grad=True)
    x0, _ = predict_x0_eps(out, xt, 0.5, "epsilon")
    x0.square().sum().backward()
    assert xt.grad is not None and out.grad is not None
    assert xt.grad.abs().sum() > 0 and out.grad.abs().sum() > 0
    # d x0 / d out = -sqrt(1-a)/sqrt(a) = -1 at a = 0.5
    torch.testing.assert_close(out.grad, -2 * x0.detach(), atol=1e-5, rtol=0)


def test_unknown_parameterisation_is_rejected():
    with pytest.raises(ValueError, match="prediction_type"):
        predict_x0_eps(torch.zeros(1), torch.zeros(1), 0.5, "score")


# ---- classifier-free guidance ----------------------------------------------------------------------


class CountingUNet(torch.nn.Module):
    """Output depends on x, t and the text embedding; counts calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, t, encoder_hidden_states):
        self.calls += 1
        shift = encoder_hidden_states.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
        return type("Out", (), {"sample": 0.1 * x + shift + t.reshape(-1, 1, 1, 1) * 1e-3})()


def test_cfg_is_one_batched_call_and_matches_the_formula():
    unet = CountingUNet()
    x, t = torch.randn(3, 4, 8, 8), torch.tensor(500)
    cond, uncond = torch.randn(3, 77, 16), torch.randn(3, 77, 16)
    guided = cfg_model_fn(unet, cond, uncond, 7.5)(x, t, 0)
    assert unet.calls == 1
    e_c = unet(x, t.expand(3), cond).sample
    e_u = unet(x, t.expand(3), uncond).sample
    torch.testing.assert_close(guided, e_u + 7.5 * (e_c - e_u))


def test_cfg_scale_one_runs_only_the_conditional_branch():
    unet = CountingUNet()
    x, cond = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 16)
    out = cfg_model_fn(unet, cond, torch.zeros_like(cond), 1.0)(x, torch.tensor(10), 0)
    assert unet.calls == 1
    torch.testing.assert_close(out, unet(x, torch.tensor([10, 10]), cond).sample)


def test_cfg_accepts_per_sample_scales_and_per_step_prompts():
    unet = CountingUNet()
    x = torch.randn(2, 4, 8, 8)
    early, late, uncond = torch.ones(2, 77, 16), -torch.ones(2, 77, 16), torch.zeros(2, 77, 16)
    fn = cfg_model_fn(unet, lambda i: early if i < 5 else late, uncond, torch.tensor([1.0, 3.0]))
    a, b = fn(x, torch.tensor(900), 0), fn(x, torch.tensor(100), 9)
    assert not torch.allclose(a, b)
    base = unet(x, torch.tensor([900, 900]), uncond).sample
    torch.testing.assert_close(a[1] - base[1], 3.0 * (a[0] - base[0]))


# ---- inversion ----------------------------------------------------------------------------------


def _round_trip_error(parts, num_steps: int) -> float:
    cond = encode_prompts(parts.tokenizer, parts.text_encoder, ["a photo of a shoe"] * 2)
    fn = cfg_model_fn(parts.unet, cond, None, 1.0)
    schedule = Schedule.from_scheduler(parts.scheduler, num_steps)
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        back = ddim_sample(fn, ddim_invert(fn, z0, schedule), schedule)
    return (back - z0).pow(2).mean().sqrt().item()


@pytest.mark.slow
def test_inversion_round_trip_converges_with_steps_on_a_random_unet(tiny_sd):
    """DDIM inversion is first order: on an untrained UNet (the hardest case, its ε is not the
    data's) the round-trip error must still shrink about as 1/steps. Measured RMS: 1.00 at 25 steps,
    0.49 at 100, 0.14 at 500."""
    errors = [_round_trip_error(tiny_sd, n) for n in (25, 100, 400)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.25
    assert errors[0] / errors[2] > 4


def test_sdedit_start_index_matches_diffusers_img2img():
    for n in (25, 50):
        for strength in (0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 1.0):
            init = min(int(n * strength), n)
            assert sdedit_start_index(strength, n) == max(n - init, 0)
    assert sdedit_start_index(1.0, 50) == 0 and sdedit_start_index(0.0, 50) == 50
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sdedit_start_index(1.5, 50)


def test_sampling_from_the_end_index_returns_input_unchanged():
    x = torch.randn(1, 4, 8, 8)
    schedule = Schedule.from_scheduler(DDIMScheduler(**SD_SCHEDULER_CONFIG), 10)
    out = ddim_sample(lambda *_: pytest.fail("no step should run"), x, schedule, start_index=10)
    assert torch.equal(out, x)


# ---- Diff-II spherical interpolation ----------------------------------------------------------------


def _pair(n=8, shape=(4, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randn(n, *shape, generator=g)


def test_lambda_zero_gives_ia_and_minus_one_gives_ib():
    a, b = _pair()
    torch.testing.assert_close(spherical_inter_extrapolate(a, b, 0.0), a)
    torch.testing.assert_close(spherical_inter_extrapolate(a, b, -1.0), b, atol=1e-5, rtol=1e-5)


def test_result_stays_on_the_great_circle():
    a, b = _pair()
    b = b * (a.flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).reshape(-1, 1, 1, 1)  # equal norms
    for lam in (0.3, 1.0, 2.5, 7.0):
        z = spherical_inter_extrapolate(a, b, lam)
        torch.testing.assert_close(z.flatten(1).norm(dim=1), a.flatten(1).norm(dim=1), rtol=1e-4, atol=0)
        # z lies in span{a, b}: the residual of a least-squares fit is zero
        basis = torch.stack([a.flatten(1), b.flatten(1)], dim=2)
        coef = torch.linalg.lstsq(basis, z.flatten(1).unsqueeze(2)).solution
        residual = (basis @ coef).squeeze(2) - z.flatten(1)
        assert residual.abs().max() < 1e-3
        # the angle walked from a is λ·α (mod 2π)
        walked = angle_between(z, a)
        expected = torch.remainder(lam * angle_between(a, b), 2 * math.pi)
        expected = torch.minimum(expected, 2 * math.pi - expected)
        torch.testing.assert_close(walked, expected, atol=1e-4, rtol=0)


def _lambda(a: torch.Tensor, b: torch.Tensor, seed: int) -> torch.Tensor:
    """λ ~ U[0, 2π/α] per pair, as Diff-II draws it (a planned fraction, then the pair's angle)."""
    fraction = torch.rand(len(a), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return lambda_from_fraction(fraction, angle_between(a, b))


def test_interpolated_gaussians_keep_unit_variance():
    """Independent N(0, I) latents of SD size stay N(0, I)-like for any λ (statistical test)."""
    a, b = _pair(n=64, shape=(4, 64, 64), seed=1)
    lam = _lambda(a, b, seed=2)
    z = spherical_inter_extrapolate(a, b, lam)
    per_sample_var = z.flatten(1).var(dim=1)
    # each sample has 16384 values: the variance estimate's standard error is about 0.011
    assert (per_sample_var - 1).abs().max() < 0.06
    assert z.mean().abs() < 0.01


def test_lambda_covers_interpolation_and_extrapolation():
    a, b = _pair(n=2000, shape=(4, 8, 8), seed=3)
    lam = _lambda(a, b, seed=4)
    alpha = angle_between(a, b)
    assert (lam >= 0).all() and (lam <= 2 * math.pi / alpha + 1e-9).all()
    walked = torch.remainder(lam * alpha, 2 * math.pi)
    between = walked > 2 * math.pi - alpha  # on the arc from I_b back to I_a: interpolation
    assert between.any() and (~between).any()
    assert (lam > 1).float().mean() > 0.5  # most draws extrapolate beyond one angle's length


def test_parallel_latents_are_rejected():
    a, _ = _pair(n=1)
    with pytest.raises(ValueError, match="parallel"):
        spherical_inter_extrapolate(a, 2 * a, 0.5)
