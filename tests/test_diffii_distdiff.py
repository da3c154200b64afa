"""Diff-II + DistDiff: Diff-II's records and images when guidance is off, guided images with the energy
of every guided step when it is on, guidance steps by the official rule on the full schedule; and the λ
range it shares with Diff-II."""

import math

import pytest
import torch
from test_methods import _records as planned_records

from diffexpand.methods import Batch, PlanContext, Record, create_method
from diffexpand.sampling import Schedule, angle_between

CTX = PlanContext(
    class_names=["Sandal", "Sneaker"],
    metaclasses=["shoe"] * 2,
    source_ids=[["s0", "s1", "s2"], ["k0", "k1", "k2"]],
    class_prompts=[f"a photo of a <class_{i}> shoe" for i in range(2)],
    plain_prompts=["a photo of a Sandal", "a photo of a Sneaker"],
)
SAMPLING = {"num_inference_steps": 4, "suffixes": ["at night"], "split_ratio": 0.5}
GUIDED = {"extractor": "oracle", "guidance_steps": 2}  # M = 2 of 4 steps: index 2, rollouts 2 and 3


def _records(method, per_class=2) -> list[Record]:
    return planned_records(method, per_class, (0, 1), CTX)


def _batch(records, extractor=None) -> Batch:
    """Seeded inversions for every record and, with an extractor, prototypes of random images."""
    inputs = []
    for r in records:
        g = torch.Generator().manual_seed(r.seed % 2**31)
        found = {name: torch.randn(4, 8, 8, generator=g) for name in ("inversion_a", "inversion_b")}
        if extractor is not None:
            found["prototype"] = extractor(torch.rand(1, 3, 32, 32, generator=g) * 2 - 1)[0].detach()
            found["group_prototypes"] = extractor(torch.rand(3, 3, 32, 32, generator=g) * 2 - 1).detach()
        inputs.append(found)
    return Batch(records, inputs)


def test_without_guidance_the_records_and_images_are_diffii_s(tiny_sd):
    diffii = create_method("diffii", **SAMPLING)
    unguided = create_method("diffii_distdiff", **SAMPLING, **GUIDED, guidance=False)
    records = _records(diffii)
    assert [r.choices for r in _records(unguided)] == [r.choices for r in records]
    batch = _batch(records, unguided.feature_extractor())
    plain, off = diffii.generate(tiny_sd, batch), unguided.generate(tiny_sd, batch)
    assert torch.equal(off.images, plain.images)
    unmeasured = {"guidance_energy": [], "guidance_fallback": False, "guidance_timesteps": []}
    assert off.extras == [e | unmeasured for e in plain.extras]
    # the NaN fallback regenerates without guidance: Diff-II's images again, guidance back on after
    guided = create_method("diffii_distdiff", **SAMPLING, **GUIDED)
    again = guided.generate_fallback(tiny_sd, batch)
    assert torch.equal(again.images, plain.images) and guided.guidance


def test_guidance_logs_the_energy_of_each_guided_step_and_moves_the_images(tiny_sd):
    settings = SAMPLING | GUIDED | {"num_inference_steps": 5, "guidance_steps": [4, 2]}
    guided = create_method("diffii_distdiff", **settings)
    batch = _batch(_records(guided), guided.feature_extractor())
    on = guided.generate(tiny_sd, batch)
    still = create_method("diffii_distdiff", **settings, step_size=0.0).generate(tiny_sd, batch)
    off = create_method("diffii_distdiff", **settings, guidance=False).generate(tiny_sd, batch)
    # 5 steps run t = 801, 601, 401, 201, 1; M = 4 and 2 guide at indices 1 and 3, two rollouts each
    for extra, unguided in zip(on.extras, off.extras, strict=True):
        assert len(extra["guidance_energy"]) == 2 and all(math.isfinite(e) for e in extra["guidance_energy"])
        assert extra["guidance_timesteps"] == [601, 401, 201, 1] and not extra["guidance_fallback"]
        assert (extra["alpha"], extra["lambda"]) == (unguided["alpha"], unguided["lambda"])
    moved = lambda a, b: (a.images - b.images).flatten(1).abs().amax(1)  # noqa: E731
    assert (moved(on, off) > 1e-3).all() and (moved(on, still) > 1e-3).all()  # the gradient step acts too
    with torch.inference_mode(), pytest.raises(RuntimeError, match="diffii_distdiff.yaml"):
        guided.generate(tiny_sd, batch)  # inference mode would silently switch the gradients off


def test_guidance_steps_count_from_the_clean_end_of_the_full_schedule(tiny_sd):
    method = create_method("diffii_distdiff")  # 25 steps, M = 10
    schedule = Schedule.from_scheduler(tiny_sd.scheduler, 25)
    assert method.guide_indices == [15] and method.guidance_timesteps(schedule) == [361, 321]
    # the official rule with sampling from the first step: what DistDiff does at strength 1.0
    for spec in (10, 25, 2, "chaos", "semantic", "refinement", [20, 5]):
        ours = create_method("diffii_distdiff", guidance_steps=spec).guide_indices
        distdiff = create_method("distdiff", num_inference_steps=25, strength=1.0, guidance_steps=spec)
        assert ours == distdiff.guide_indices, spec
    stages = create_method("diffii_distdiff", guidance_steps=["chaos", "semantic", "refinement"])
    assert stages.guide_indices == [4, 12, 21]
    with pytest.raises(ValueError, match=r"M=26.*sampling from step 0.*must be in \[2, 25\]"):
        create_method("diffii_distdiff", guidance_steps=26)


def test_lambda_range_keeps_lambda_on_its_part_of_the_circle(tiny_sd):
    default = create_method("diffii")
    records = _records(default, per_class=6)
    batch = _batch(records)
    z_default, _ = default.slerp_start(tiny_sd, batch)
    a, b = batch.stack("inversion_a"), batch.stack("inversion_b")
    fractions = [r["lambda_fraction"] for r in records]
    for span in ("full", "interpolation", "extrapolation", [0.25, 0.5]):
        z, extras = create_method("diffii_distdiff", lambda_range=span).slerp_start(tiny_sd, batch)
        alpha = torch.tensor([e["alpha"] for e in extras], dtype=torch.float64)
        lam = torch.tensor([e["lambda"] for e in extras], dtype=torch.float64)
        turn = lam * alpha / (2 * math.pi)  # the share of the whole turn walked from I_a
        detour = angle_between(z, a) + angle_between(z, b) - alpha  # 0 on the arc between them
        if span == "full":
            assert torch.equal(z, z_default)  # Diff-II's default, bit for bit
            torch.testing.assert_close(turn, torch.tensor(fractions, dtype=torch.float64))
        elif span == "interpolation":
            assert ((lam > -1) & (lam <= 0)).all() and detour.abs().max() < 1e-4
        elif span == "extrapolation":
            assert ((turn >= 0) & (turn < 1 - alpha / (2 * math.pi))).all() and (detour > 1e-3).all()
        else:
            assert ((turn >= 0.25) & (turn < 0.5)).all()
    for bad in ("middle", [0.5, 0.2], [0.0, 0.5, 1.0]):
        with pytest.raises(ValueError, match="lambda_range must be one of"):
            create_method("diffii", lambda_range=bad)
