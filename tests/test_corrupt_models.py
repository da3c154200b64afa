"""A damaged model file is named: every model, oracle, CLIP, checkpoint and concept load that fails on a
file says which file and what to do, and the CLI shows it as one `error:` line."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffexpand.concepts import ConceptFolderError, apply_concepts
from diffexpand.models import load_sd_components
from diffexpand.paths import DEFAULT_ORACLE, DEFAULT_PRIOR, REPO_ROOT

COMMITTED_CONCEPTS = REPO_ROOT / "assets/concepts/fashion_mnist-5shot-seed0"
DAMAGED = "The file is damaged, incomplete or not of its kind"


def _garble(path, how: str = "random") -> None:
    if how == "random":
        path.write_bytes(os.urandom(4096))
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "bad json":
        path.write_text('{"sample_size": 8,')


PRIOR_CASES = {
    "text encoder weights, random bytes": ("text_encoder/model.safetensors", "random"),
    "unet weights, random bytes": ("unet/diffusion_pytorch_model.safetensors", "random"),
    "vae weights, truncated": ("vae/diffusion_pytorch_model.safetensors", "truncated"),
    "unet config, bad json": ("unet/config.json", "bad json"),
    "tokenizer, bad json": ("tokenizer/tokenizer.json", "bad json"),
}


@pytest.mark.parametrize("case", list(PRIOR_CASES))
def test_a_damaged_file_of_a_model_folder_is_named_with_what_to_do(case, tmp_path):
    relative, how = PRIOR_CASES[case]
    prior = shutil.copytree(DEFAULT_PRIOR, tmp_path / "prior")
    _garble(prior / relative, how)
    with pytest.raises(OSError) as err:
        load_sd_components(prior)
    message = str(err.value)
    assert f"{prior / relative} cannot be read" in message
    assert DAMAGED in message and "download the model again, or make the folder again" in message


def test_a_committed_asset_is_restored_with_git_or_made_again():
    from diffexpand.models.identity import how_to_replace

    hint = how_to_replace(DEFAULT_PRIOR / "unet/diffusion_pytorch_model.safetensors")
    assert "`git checkout -- assets/tiny-fashion-prior-v3`" in hint and "`make prior`" in hint
    hint = how_to_replace(DEFAULT_ORACLE / "config.json")
    assert "`git checkout -- assets/fashion-oracle`" in hint and "`make oracle`" in hint
    hint = how_to_replace(COMMITTED_CONCEPTS / "embeddings/class_3.safetensors")
    assert "`git checkout -- assets/concepts/fashion_mnist-5shot-seed0`" in hint
    assert "`make concepts`" in hint
    hub = "/home/u/.cache/huggingface/hub/models--org--sd/snapshots/abc/unet/config.json"
    assert "hf download org/sd --force-download" in how_to_replace(hub)


def test_expand_predict_shows_a_damaged_model_file_as_one_error_line(tmp_path):
    prior = shutil.copytree(DEFAULT_PRIOR, tmp_path / "prior")
    damaged = prior / "text_encoder/model.safetensors"
    _garble(damaged)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "expand.py"), "predict", "--config", "configs/expand/txt2img.yaml",
         f"--model.init_args.pretrained={prior}", f"--output_dir={out}", "--trainer.logger=false",
         "--trainer.accelerator=cpu", "--data.init_args.real=null", "--data.init_args.class_names=[top,shoe]",
         "--data.init_args.images_per_class=1", f"--data.init_args.cache_dir={tmp_path / 'cache'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{damaged} cannot be read" in errors[0] and DAMAGED in errors[0]
    assert not list(out.glob("**/*.png"))  # nothing generated


@pytest.mark.parametrize("damaged", ["model.safetensors", "config.json"])
def test_a_damaged_oracle_file_is_named(damaged, tmp_path):
    from diffexpand.oracle_cnn import OracleCNN

    oracle = shutil.copytree(DEFAULT_ORACLE, tmp_path / "oracle")
    _garble(oracle / damaged, "random" if damaged.endswith("safetensors") else "bad json")
    with pytest.raises(OSError, match=f"{re.escape(str(oracle / damaged))} cannot be read.*{DAMAGED}"):
        OracleCNN.load(oracle)


def test_a_damaged_oracle_stops_an_expansion_before_it_generates(tmp_path):
    """The set-metrics callback loads the oracle in setup, not after every image is made."""
    from types import SimpleNamespace

    from callbacks.set_metrics import SyntheticSetMetrics

    oracle = shutil.copytree(DEFAULT_ORACLE, tmp_path / "oracle")
    _garble(oracle / "model.safetensors")
    callback = SyntheticSetMetrics(oracle=str(oracle), clip_model=None, lpips_net=None)
    with pytest.raises(OSError, match=f"{re.escape(str(oracle / 'model.safetensors'))} cannot be read"):
        callback.setup(SimpleNamespace(is_global_zero=True), None, "predict")


def test_a_damaged_resume_checkpoint_is_named(tmp_path):
    from callbacks.resume import check_same_run

    checkpoint = tmp_path / "last.ckpt"
    _garble(checkpoint)
    with pytest.raises(OSError, match=f"{re.escape(str(checkpoint))} cannot be read.*--ckpt_path"):
        check_same_run(checkpoint, torch.nn.Module(), None)


def test_an_oracle_of_another_size_is_named(tmp_path):
    from diffexpand.oracle_cnn import OracleCNN

    oracle = shutil.copytree(DEFAULT_ORACLE, tmp_path / "oracle")
    (oracle / "config.json").write_text('{"num_classes": 7, "width": 32, "feature_dim": 128}')
    with pytest.raises(
        ValueError, match=f"{re.escape(str(oracle / 'model.safetensors'))} does not fit the oracle"
    ):
        OracleCNN.load(oracle)


def test_a_damaged_tiny_clip_file_is_named_not_skipped(tmp_path):
    from diffexpand.evaluation.set_metrics import MetricWeightsNotAvailable, load_clip

    clip = shutil.copytree(REPO_ROOT / "assets/tiny-fashion-clip", tmp_path / "clip")
    _garble(clip / "model.safetensors")
    with pytest.raises(OSError, match=f"{re.escape(str(clip / 'model.safetensors'))} cannot be read") as err:
        load_clip(str(clip))
    assert not isinstance(err.value, MetricWeightsNotAvailable)  # an error to fix, not a metric to leave out


@pytest.mark.parametrize("name", ["backbone.safetensors", "backbone.pth"])
def test_a_damaged_classifier_checkpoint_is_named(name, tmp_path):
    from diffexpand.features.timm_backbone import load_state_dict_file

    path = tmp_path / name
    _garble(path)
    with pytest.raises(OSError, match=f"{re.escape(str(path))} cannot be read"):
        load_state_dict_file(path)


def _concepts_with(tmp_path, change) -> tuple:
    folder = shutil.copytree(COMMITTED_CONCEPTS, tmp_path / "concepts")
    change(folder / "pytorch_lora_weights.safetensors")
    parts = load_sd_components(DEFAULT_PRIOR)
    return folder, parts, len(parts.tokenizer)


def test_a_damaged_concept_lora_file_is_named_and_nothing_changes(tmp_path):
    folder, parts, vocabulary = _concepts_with(tmp_path, _garble)
    with pytest.raises(
        OSError, match=f"{re.escape(str(folder / 'pytorch_lora_weights.safetensors'))} cannot be read"
    ):
        apply_concepts(parts, folder)
    assert len(parts.tokenizer) == vocabulary and not getattr(parts.unet, "peft_config", None)


def test_a_concept_lora_that_does_not_fit_the_unet_is_named(tmp_path):
    def widen_one_matrix(path):
        state = load_file(path)
        name = next(k for k in sorted(state) if k.endswith("lora.down.weight"))
        state[name] = torch.zeros(state[name].shape[0], state[name].shape[1] + 3)
        save_file(state, path)

    folder, parts, vocabulary = _concepts_with(tmp_path, widen_one_matrix)
    lora = folder / "pytorch_lora_weights.safetensors"
    with pytest.raises(
        ConceptFolderError,
        match=f"{re.escape(str(lora))} does not fit the UNet it is applied to.*size mismatch",
    ):
        apply_concepts(parts, folder)
    assert len(parts.tokenizer) == vocabulary and not getattr(parts.unet, "peft_config", None)


def test_a_damaged_embedding_file_is_named(tmp_path):
    folder = shutil.copytree(COMMITTED_CONCEPTS, tmp_path / "concepts")
    path = folder / "embeddings/class_5.safetensors"
    _garble(path)
    parts = load_sd_components(DEFAULT_PRIOR)
    vocabulary = len(parts.tokenizer)
    with pytest.raises(OSError, match=f"{re.escape(str(path))} cannot be read.*learn the concepts again"):
        apply_concepts(parts, folder)
    assert len(parts.tokenizer) == vocabulary
