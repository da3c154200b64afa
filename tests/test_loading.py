"""The real `from_pretrained` path, on a tiny stack saved in diffusers layout."""

import pytest
import torch

from diffexpand.models import ModelNotAvailableError, load_sd_components


def test_loads_every_part_from_a_local_folder(tiny_sd_dir):
    parts = load_sd_components(tiny_sd_dir, dtype=torch.float16)
    assert parts.unet.dtype == parts.vae.dtype == parts.text_encoder.dtype == torch.float16
    assert parts.unet.config.cross_attention_dim == parts.text_encoder.config.hidden_size
    assert type(parts.scheduler).__name__ == "DDIMScheduler"
    assert parts.tokenizer.model_max_length == 77
    assert parts.vae_scale_factor == 4


def test_loaded_weights_equal_saved_weights(tiny_sd_dir, tiny_sd):
    from diffexpand.models import build_tiny_sd

    fresh = build_tiny_sd()  # same seed as the fixture's
    for name, module in fresh.modules.items():
        loaded = tiny_sd.modules[name].state_dict()
        for key, value in module.state_dict().items():
            torch.testing.assert_close(loaded[key], value, msg=f"{name}.{key}")


def test_stock_diffusers_pipeline_loads_and_generates(tiny_sd_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, dtype=torch.float32)
    out = pipe("a photo of a shoe", num_inference_steps=2, height=32, width=32, output_type="np")
    assert out.images.shape == (1, 32, 32, 3)


def test_uncached_hub_id_offline_fails_with_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    with pytest.raises(ModelNotAvailableError) as err:
        load_sd_components("stable-diffusion-v1-5/stable-diffusion-v1-5")
    message = str(err.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message
    assert "local diffusers-layout folder" in message and "offline" in message


def test_folder_missing_parts_is_named(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelNotAvailableError, match="missing subfolder"):
        load_sd_components(tmp_path)


def test_missing_local_path_is_reported(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        load_sd_components(tmp_path / "no-such-model")


def test_repository_paths_are_recorded_portably_and_load_from_anywhere(tmp_path, monkeypatch):
    from diffexpand.models import load_sd_components
    from diffexpand.paths import DEFAULT_PRIOR, portable

    assert portable(DEFAULT_PRIOR) == "assets/tiny-fashion-prior-v3"
    assert portable(tmp_path) == str(tmp_path)  # outside the repository: unchanged
    monkeypatch.chdir(tmp_path)
    parts = load_sd_components("assets/tiny-fashion-prior-v3")  # relative to the repository, not the cwd
    assert parts.unet.config.sample_size > 0


def test_sd15_architecture_has_stable_diffusion_1_5_parameter_counts():
    """Random-weight SD-1.5 (benchmarks/throughput.py --architecture sd15) must be the real size."""
    import torch

    from diffexpand.models.tiny import (
        SD15_ARCHITECTURE,
        build_tiny_text_encoder,
        build_tiny_unet,
        build_tiny_vae,
    )

    with torch.device("meta"):  # shapes only: no memory, no time
        counts = [sum(p.numel() for p in build(SD15_ARCHITECTURE).parameters())
                  for build in (build_tiny_unet, build_tiny_vae, build_tiny_text_encoder)]  # fmt: skip
    assert counts == [859_520_964, 83_653_863, 123_060_480]  # the published SD-1.5 checkpoints' counts
    assert SD15_ARCHITECTURE.latent_size == 64


def test_a_half_precision_folder_loads_in_a_stock_pipeline_without_a_dtype(tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from diffexpand.models import build_tiny_sd

    build_tiny_sd().save_pretrained(tmp_path, dtype=torch.float16)
    stored = load_file(next((tmp_path / "text_encoder").glob("*.safetensors")))
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}  # small on disk
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path)  # every part in float32, as stock loads them
    out = pipe("a photo of a bag", num_inference_steps=2, height=32, width=32, output_type="np")
    assert out.images.shape == (1, 32, 32, 3)
