"""DistDiff: hierarchical prototypes, energy guidance, step validation, and guidance under a real
Lightning Trainer (inference mode would silently disable the gradients)."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from diffexpand.guidance import (
    EnergyGuidance,
    group_prototypes,
    hierarchical_prototypes,
    prototype_energy,
    resolve_guidance_steps,
)
from diffexpand.guidance.prototypes import kmeans_groups
from diffexpand.methods import create_method


def _toy_clusters(seed=0, k=3, n=12, d=16):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 3
    return torch.cat([centres[i] + 0.2 * torch.randn(n, d, generator=g) for i in range(k)]), k, n


def _plain_spherical_kmeans(x: np.ndarray, k: int, iters: int = 50) -> np.ndarray:
    """Reference: Lloyd's algorithm on the unit sphere from a farthest-point start."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    centres = [x[0]]
    for _ in range(k - 1):
        centres.append(x[np.argmin(np.max(np.stack([x @ c for c in centres]), axis=0))])
    centres = np.stack(centres)
    for _ in range(iters):
        labels = np.argmax(x @ centres.T, axis=1)
        centres = np.stack([x[labels == j].mean(0) for j in range(k)])
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return labels


def _same_partition(a, b) -> bool:
    return len(set(zip(a.tolist(), b.tolist(), strict=True))) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_groups_are_seeded_and_agree_with_a_plain_implementation():
    x, k, n = _toy_clusters()
    f = torch.nn.functional.normalize(x, dim=-1).numpy()
    a, b = kmeans_groups(f, k, seed=3), kmeans_groups(f, k, seed=3)
    assert (a == b).all()
    assert _same_partition(a, _plain_spherical_kmeans(f, k))
    assert _same_partition(a, np.repeat(np.arange(k), n))
    groups = group_prototypes(x, k, "agglomerative")
    assert torch.allclose(groups.norm(dim=-1), torch.ones(k))
    assert torch.allclose(
        torch.sort(groups @ group_prototypes(x, k, "kmeans").T, dim=1).values[:, -1], torch.ones(k), atol=1e-5
    )  # fmt: skip  (both clusterings find the same centres)


def test_k_larger_than_a_class_is_clamped_with_one_warning():
    x, _, _ = _toy_clusters()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        protos = hierarchical_prototypes({0: x, 1: x[:2], 2: x[:1]}, 3, class_names=["a", "b", "c"])
    assert len(caught) == 1 and "b, c" in str(caught[0].message)
    cls, groups = protos[1]
    assert groups.shape == (3, 16)  # padded by repeating, so records stack
    expected = torch.nn.functional.normalize(x[:2], dim=-1)
    assert torch.allclose(torch.sort(groups @ expected.T, dim=0).values[-1], torch.ones(2), atol=1e-5)


def _toy_problem(batch=4, seed=0):
    """A toy 'denoiser + decoder + extractor': z -> tanh(W z) features; prototypes fixed."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 4 * 4 * 4, generator=g) / 8
    z = torch.randn(batch, 4, 4, 4, generator=g)
    protos = torch.randn(batch, 8, generator=g)
    groups = torch.randn(batch, 3, 8, generator=g)

    def energy_of(latents):
        return prototype_energy(torch.tanh(latents.flatten(1) @ w.T), protos, groups)

    return z, energy_of


@pytest.mark.parametrize("variant", ["residual", "direct"])
def test_one_guidance_step_lowers_the_energy_and_respects_the_bound(variant):
    z, energy_of = _toy_problem()
    result = EnergyGuidance(step_size=0.5, bound=0.2, variant=variant).apply(z, energy_of)
    after = energy_of(result.latents)
    assert torch.allclose(result.energy, energy_of(z))
    assert (after < result.energy).all()
    big = EnergyGuidance(step_size=1e6, bound=0.05, variant=variant).apply(z, energy_of)
    assert all(p.abs().max() <= 0.05 + 1e-7 for p in big.params)
    if variant == "direct":
        assert (big.latents - z).abs().max() <= 0.05 + 1e-6
    else:
        alpha, beta = big.params
        assert alpha.shape == beta.shape == (4, 4, 1, 1)
        assert torch.allclose(big.latents, z * (1 + alpha) + beta)


def test_non_finite_gradient_turns_guidance_off_for_that_sample_only():
    z, energy_of = _toy_problem()

    def broken(latents):  # sample 1's energy (and so its gradient) is NaN
        return energy_of(latents) * torch.tensor([1.0, float("nan"), 1.0, 1.0])

    result = EnergyGuidance(step_size=0.5).apply(z, broken)
    assert result.failed.tolist() == [False, True, False, False]
    assert torch.equal(result.latents[1], z[1]) and not torch.equal(result.latents[0], z[0])


def test_guidance_steps_resolve_and_out_of_range_is_an_error():
    assert resolve_guidance_steps(20, 25, 2) == [20]
    assert resolve_guidance_steps(["chaos", "semantic", "refinement"], 24, 2) == [4, 12, 20]
    assert resolve_guidance_steps("refinement", 6, 2) == [4]
    with pytest.raises(ValueError, match=r"must be in \[0, 23\]"):
        resolve_guidance_steps(24, 25, 2)
    with pytest.raises(ValueError, match="stage must be one of"):
        resolve_guidance_steps("late", 25, 2)
    # the official default M = 20 does not fit strength 0.3 of 50 steps (15 sampled): an error, not a no-op
    with pytest.raises(ValueError, match="outside the sampled range"):
        create_method("distdiff", strength=0.3)


def _run(tiny_sd_dir, out, cache, *extra):
    import expand

    expand.cli_main([
        "predict", "--config", "configs/expand/distdiff.yaml", f"--output_dir={out}",
        "--trainer.accelerator=cpu",
        f"--model.init_args.pretrained={tiny_sd_dir}", "--model.init_args.method_args.num_inference_steps=6",
        "--model.init_args.method_args.guidance_steps=0", "--model.init_args.method_args.extractor=oracle",
        "--model.init_args.method_args.step_size=100", "--data.init_args.real.shots=2",
        "--data.init_args.images_per_class=1", f"--data.init_args.cache_dir={cache}", *extra,
    ])  # fmt: skip
    return {r["id"]: r for r in map(json.loads, (out / "metadata.jsonl").read_text().splitlines())}


def test_guidance_changes_the_output_under_a_real_trainer(tiny_sd_dir, tmp_path):
    on = _run(tiny_sd_dir, tmp_path / "on", tmp_path / "cache")
    off = _run(
        tiny_sd_dir, tmp_path / "off", tmp_path / "cache", "--model.init_args.method_args.guidance=false"
    )
    assert on.keys() == off.keys() and len(on) == 10
    changed = 0
    for sid, r in on.items():
        assert (
            len(r["guidance_energy"]) == 1
            and not r["guidance_fallback"]
            and off[sid]["guidance_energy"] == []
        )
        a = np.asarray(Image.open(tmp_path / "on" / r["file_name"]), dtype=int)
        b = np.asarray(Image.open(tmp_path / "off" / r["file_name"]), dtype=int)
        changed += int(np.abs(a - b).max() > 1)
    assert changed == len(on)
    assert list((tmp_path / "cache").glob("prototypes-*.safetensors"))


@pytest.mark.parametrize("autocast", ["none", "bf16"])
def test_guided_images_do_not_depend_on_the_batch_size(tiny_sd_dir, tmp_path, autocast):
    # guidance steps are per sample: a batch's other samples must not move one sample's image
    runs = {bs: _run(tiny_sd_dir, tmp_path / f"bs{bs}", tmp_path / "cache",
                     f"--data.init_args.batch_size={bs}", f"--model.init_args.autocast={autocast}")
            for bs in (1, 5)}  # fmt: skip
    assert runs[1].keys() == runs[5].keys() and len(runs[1]) == 10
    for sid, r in runs[1].items():
        other = runs[5][sid]
        assert r["guidance_energy"] == pytest.approx(other["guidance_energy"], rel=1e-3, abs=1e-4)
        a = np.asarray(Image.open(tmp_path / "bs1" / r["file_name"]), dtype=int)
        b = np.asarray(Image.open(tmp_path / "bs5" / other["file_name"]), dtype=int)
        assert np.abs(a - b).max() <= 1


def test_inference_mode_is_refused_with_a_clear_message(tiny_sd_dir, tmp_path):
    with pytest.raises(RuntimeError, match="inference_mode: false"):
        _run(tiny_sd_dir, tmp_path / "out", tmp_path / "cache", "--trainer.inference_mode=true")


def test_gradient_checkpointing_gives_the_same_images(tiny_sd):
    from diffexpand.methods import PlanContext, sample_rng

    ctx = PlanContext(["a", "b"], ["shoe"] * 2, [["x0", "x1"], ["y0"]], ["p a", "p b"], ["a photo of a", "b"])
    outputs = []
    for checkpointing in (False, True):
        method = create_method("distdiff", num_inference_steps=6, guidance_steps=0, extractor="oracle",
                               step_size=100.0, gradient_checkpointing=checkpointing)  # fmt: skip
        extractor = method.load_extractor()
        records = []
        for i, label in enumerate((0, 1, 0)):
            r = {"sample_id": f"s{i}", "label": label, "seed": 100 + i} | method.plan(
                ctx, label, sample_rng(i)
            )
            g = torch.Generator().manual_seed(i)
            r["source_latent"] = torch.randn(4, 8, 8, generator=g)
            r["prototype"] = extractor(torch.rand(1, 3, 32, 32, generator=g) * 2 - 1)[0].detach()
            r["group_prototypes"] = extractor(torch.rand(3, 3, 32, 32, generator=g) * 2 - 1).detach()
            records.append(r)
        outputs.append((method.generate(tiny_sd, records), [r["guidance_energy"] for r in records]))
    (plain, e_plain), (ckpt, e_ckpt) = outputs
    assert torch.allclose(plain, ckpt, atol=1e-5)
    assert torch.allclose(torch.tensor(e_plain), torch.tensor(e_ckpt), atol=1e-6)


def test_a_non_finite_energy_turns_guidance_off_for_that_sample_and_is_recorded(tiny_sd_dir, tmp_path,
                                                                                 monkeypatch):  # fmt: skip
    from diffexpand.methods.distdiff import DistDiff

    original = DistDiff.energy_fn

    def energy_fn(self, parts, model_fn, schedule, records, index):  # class 3's features come out NaN
        energy_of = original(self, parts, model_fn, schedule, records, index)
        poison = torch.tensor([float("nan") if r["label"] == 3 else 1.0 for r in records])
        return lambda z: energy_of(z) * poison.to(z.device)

    _run(tiny_sd_dir, tmp_path / "off", tmp_path / "cache", "--model.init_args.method_args.guidance=false")
    monkeypatch.setattr(DistDiff, "energy_fn", energy_fn)
    got = _run(tiny_sd_dir, tmp_path / "on", tmp_path / "cache")
    assert {sid for sid, r in got.items() if r["guidance_fallback"]} == {
        s for s, r in got.items() if r["label"] == 3
    }
    for sid, r in got.items():
        a = np.asarray(Image.open(tmp_path / "on" / r["file_name"]), dtype=int)
        b = np.asarray(Image.open(tmp_path / "off" / r["file_name"]), dtype=int)
        assert (np.abs(a - b).max() <= 1) == (r["label"] == 3), sid  # only class 3 went unguided


def test_a_non_finite_image_is_regenerated_without_guidance_and_marked(tiny_sd_dir, tmp_path, monkeypatch):
    from diffexpand.methods.distdiff import DistDiff

    original, left = DistDiff.generate, [1]

    def generate(self, parts, records):  # the first batch comes out NaN once (as an fp16 overflow would)
        images = original(self, parts, records)
        if left[0] > 0:
            left[0] -= 1
            images[0] = torch.nan
        return images

    monkeypatch.setattr(DistDiff, "generate", generate)
    got = _run(tiny_sd_dir, tmp_path / "out", tmp_path / "cache")
    marked = [r for r in got.values() if "numerical_fallback" in r]
    assert len(marked) == 1 and marked[0]["numerical_fallback"] == DistDiff.fallback_note
    assert marked[0]["guidance_energy"] == [] and len(got) == 10
    for r in got.values():
        assert np.asarray(Image.open(tmp_path / "out" / r["file_name"])).std() > 0  # no flat (black) image
