"""The Expander's speed settings: each changes how the arithmetic runs, not what is generated."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import expand
from diffexpand.models.vae import decode_latents, encode_images


def _generate(tiny_sd_dir, out, *extra) -> dict[str, np.ndarray]:
    expand.cli_main([
        "predict", "--config", "configs/expand/txt2img.yaml", f"--model.init_args.pretrained={tiny_sd_dir}",
        "--model.init_args.method.num_inference_steps=4", f"--output_dir={out}",
        "--data.init_args.real=null", "--data.init_args.class_names=[a,b,c]",
        "--data.init_args.images_per_class=2", "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu", *extra,
    ])  # fmt: skip
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    return {r["id"]: np.asarray(Image.open(out / r["file_name"]), dtype=int) for r in records}


@pytest.fixture(scope="module")
def reference(tiny_sd_dir, tmp_path_factory):
    return _generate(tiny_sd_dir, tmp_path_factory.mktemp("fp32") / "out", "--model.init_args.autocast=none")


def _max_diff(a: dict, b: dict) -> int:
    assert a.keys() == b.keys()
    return max(int(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.mark.parametrize(
    "setting, tolerance",
    [
        ("--model.init_args.attention=eager", 1),  # same maths, other kernel
        ("--model.init_args.channels_last=true", 1),  # same maths, other memory layout
        ("--model.init_args.autocast=bf16", 24),  # 8-bit mantissa: close, not equal (9 seen)
    ],
)
def test_speed_settings_keep_the_images(tiny_sd_dir, tmp_path, reference, setting, tolerance):
    exact = [] if "autocast" in setting else ["--model.init_args.autocast=none"]  # auto: bf16 on some CPUs
    got = _generate(tiny_sd_dir, tmp_path / "out", setting, *exact)
    assert _max_diff(reference, got) <= tolerance


def test_bf16_autocast_really_runs_in_bf16(tiny_sd_dir, tmp_path, reference):
    got = _generate(tiny_sd_dir, tmp_path / "out", "--model.init_args.autocast=bf16")
    assert _max_diff(reference, got) > 0  # a setting that changed nothing would not be autocast


def test_compile_wraps_the_unet_forward_once(tiny_sd_dir, tmp_path, reference, monkeypatch):
    # Inductor compilation takes minutes on 2 cores; the compiled UNet is timed on GPU by
    # benchmarks/throughput.py. Here: the setting reaches torch.compile, and hooks stay outside it.
    compiled = []

    def fake_compile(fn, **kwargs):
        compiled.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    got = _generate(
        tiny_sd_dir, tmp_path / "out", "--model.init_args.compile=true", "--model.init_args.autocast=none"
    )
    assert len(compiled) == 1 and compiled[0].__func__.__name__ == "forward"
    assert _max_diff(reference, got) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_vae_runs_outside_autocast_in_float32(tiny_sd, dtype):
    # fp16: SD's VAE overflows; bf16: its kernels round differently at different batch sizes
    g = torch.Generator().manual_seed(0)
    latents, images = torch.randn(8, 4, 8, 8, generator=g), torch.rand(8, 3, 32, 32, generator=g) * 2 - 1
    with torch.autocast("cpu", dtype=dtype):
        decoded, encoded = decode_latents(tiny_sd.vae, latents), encode_images(tiny_sd.vae, images)
        one_by_one = torch.cat([decode_latents(tiny_sd.vae, z[None]) for z in latents])
    assert decoded.dtype == encoded.dtype == torch.float32 and decoded.isfinite().all()
    torch.testing.assert_close(one_by_one, decoded, rtol=0, atol=1e-4)  # bf16 VAE: up to 0.03 apart


@pytest.mark.parametrize(
    "device, cuda_bf16, native_cpu_bf16, latent_size, autocast, attention",
    [
        ("cpu", False, True, 8, torch.bfloat16, "eager"),  # the tiny prior on a bf16 CPU
        ("cpu", False, True, 64, torch.bfloat16, "sdpa"),  # SD's 64 x 64 latents: flash wins
        ("cpu", False, False, 8, None, "sdpa"),  # emulated bf16 is slower than float32
        ("cuda", True, False, 8, torch.bfloat16, "sdpa"),
        ("cuda", False, True, 8, None, "sdpa"),  # a GPU without bf16
    ],
)
def test_auto_settings_follow_the_hardware(
    monkeypatch, device, cuda_bf16, native_cpu_bf16, latent_size, autocast, attention
):
    from types import SimpleNamespace

    import diffexpand.models.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native_cpu_bf16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    parts = SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(sample_size=latent_size)))
    auto, explicit = (
        runtime.DiffusionRuntime("unused", runtime.SpeedSettings(attention=a)) for a in ("auto", "sdpa")
    )
    auto._parts = explicit._parts = parts  # nothing loaded: only the UNet's latent size is read
    assert auto.autocast_dtype(torch.device(device)) == autocast
    assert auto.attention_kind(torch.device(device)) == attention
    assert explicit.attention_kind(torch.device(device)) == "sdpa"  # an explicit choice is kept
    assert auto.resolved_speed(torch.device(device))["attention"] == attention  # what fingerprints see


@pytest.mark.parametrize(
    "setting, message",
    [("autocast=fp8", "autocast must be"), ("attention=flash", "attention must be"), ("dtype=int8", "dtype")],
)
def test_bad_speed_settings_name_the_allowed_values(tiny_sd_dir, tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        _generate(tiny_sd_dir, tmp_path / "out", f"--model.init_args.{setting}")


def test_fused_concept_lora_is_the_same_function_without_adapter_layers():
    from peft.tuners.lora import LoraLayer

    from diffexpand.methods import create_method
    from diffexpand.paths import REPO_ROOT
    from lightning_modules.expander import Expander

    concepts = str(REPO_ROOT / "assets/concepts/fashion_mnist-5shot-seed0")  # learned on the committed prior
    unets, fingerprints = {}, {}
    for fuse in (False, True):
        module = Expander(method=create_method("diffii"), concepts=concepts, fuse_lora=fuse)
        unets[fuse], fingerprints[fuse] = module.runtime.parts.unet.eval(), module.runtime.fingerprint()
    assert any(isinstance(m, LoraLayer) for m in unets[False].modules())  # the LoRA is there, unfused…
    assert not any(isinstance(m, LoraLayer) for m in unets[True].modules())  # …and merged away when fused
    g = torch.Generator().manual_seed(0)
    x, text, t = (
        torch.randn(3, 4, 8, 8, generator=g),
        torch.randn(3, 8, 64, generator=g),
        torch.tensor([10, 500, 900]),
    )
    base = Expander().runtime.parts.unet.eval()
    with torch.no_grad():
        plain, fused, without_lora = (unet(x, t, text).sample for unet in (unets[False], unets[True], base))
    assert (plain - without_lora).abs().max() > 1e-2  # the LoRA matters…
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-4)  # …and fusing keeps it
    assert fingerprints[True] != fingerprints[False]  # caches and sets are not shared across the two
