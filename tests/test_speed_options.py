"""The Expander's speed settings: each changes how the arithmetic runs, not what is generated."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import expand
from diffexpand.models.vae import decode_latents


def _generate(tiny_sd_dir, out, *extra) -> dict[str, np.ndarray]:
    expand.cli_main([
        "predict", "--config", "configs/expand/txt2img.yaml", f"--model.init_args.pretrained={tiny_sd_dir}",
        "--model.init_args.method_args.num_inference_steps=4", f"--output_dir={out}",
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
    got = _generate(tiny_sd_dir, tmp_path / "out", setting)
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
    got = _generate(tiny_sd_dir, tmp_path / "out", "--model.init_args.compile=true")
    assert len(compiled) == 1 and compiled[0].__func__.__name__ == "forward"
    assert _max_diff(reference, got) == 0


def test_fp16_autocast_decodes_in_float32(tiny_sd):
    latents = torch.randn(2, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.float16):
        images = decode_latents(tiny_sd.vae, latents)
    assert images.dtype == torch.float32 and images.isfinite().all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert decode_latents(tiny_sd.vae, latents).dtype == torch.bfloat16  # bf16 stays on


@pytest.mark.parametrize(
    "setting, message",
    [("autocast=fp8", "autocast must be"), ("attention=flash", "attention must be"), ("dtype=int8", "dtype")],
)
def test_bad_speed_settings_name_the_allowed_values(tiny_sd_dir, tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        _generate(tiny_sd_dir, tmp_path / "out", f"--model.init_args.{setting}")
