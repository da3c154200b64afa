"""DreamBooth's prior preservation in concept learning: the class prompt, class samples drawn from the prior
with the LoRA switched off (so a resumed run draws the same), one per instance from its metaclass's pool, the
loss it adds, and the settings it refuses."""

import math

import lightning as L
import pytest
import torch

from datamodules.labeled import LabeledImageDataModule
from diffexpand.concepts import add_shared_lora
from diffexpand.concepts.prior_preservation import draw_class_batch, metaclass_prompt, sample_class_latents
from diffexpand.models import load_sd_components
from lightning_modules.concept import ConceptLearner

PRESERVE = {"prior_preservation_weight": 1.0, "class_samples_per_metaclass": 3, "class_sampling_steps": 2}


def test_the_class_prompt_is_the_concept_prompt_without_its_tokens():
    assert metaclass_prompt("a photo of a {tokens} {metaclass}", "shoe") == "a photo of a shoe"
    assert metaclass_prompt("{tokens}, a {metaclass} on a table", "bag") == ", a bag on a table"


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"prior_preservation_weight": -0.5}, "prior_preservation_weight"),
        ({"prior_preservation_weight": math.nan}, "prior_preservation_weight"),
        ({"prior_preservation_weight": True}, "prior_preservation_weight"),
        ({"prior_preservation_weight": 1.0, "lora_rank": 0}, "needs a LoRA"),
        ({"prior_preservation_weight": 1.0, "class_samples_per_metaclass": 0}, "class_samples_per_metaclass"),
        ({"prior_preservation_weight": 1.0, "class_sampling_steps": 2.5}, "class_sampling_steps"),
    ],
)
def test_bad_prior_preservation_settings_are_refused_before_loading(settings, match):
    with pytest.raises(ValueError, match=match):
        ConceptLearner(**settings)
    # off: the rest is not checked
    ConceptLearner(prior_preservation_weight=0.0, lora_rank=0, class_samples_per_metaclass=0)


def test_class_samples_come_from_the_prior_with_the_lora_off_and_repeat(tiny_sd_dir):
    plain = load_sd_components(tiny_sd_dir)
    adapted = load_sd_components(tiny_sd_dir)
    add_shared_lora(adapted.unet, rank=4)
    with torch.no_grad():  # a trained LoRA: B is no longer zero, so it changes the UNet's output
        for name, param in adapted.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapted.unet.train()
    shape = (plain.unet.config.in_channels, 8, 8)
    kwargs = {"steps": 3, "guidance_scale": 3.0, "seed": 0}
    prompts = ["a photo of a shoe", "a photo of a bag"]
    counted = []
    reference = sample_class_latents(plain, prompts, 5, shape, progress=counted.append, **kwargs)
    assert [p.shape for p in reference] == [(5, *shape)] * 2 and sum(counted) == 10
    assert not torch.allclose(reference[0], reference[1])  # another prompt, other noise: other samples
    drawn = sample_class_latents(adapted, prompts, 5, shape, **kwargs)
    for ours, theirs in zip(drawn, reference, strict=True):
        torch.testing.assert_close(ours, theirs)
    assert adapted.unet.training  # its mode and its adapters are given back
    x, t = torch.randn(1, *shape), torch.tensor([500])
    hidden = torch.randn(1, 77, plain.text_encoder.config.hidden_size)
    with torch.no_grad():
        assert not torch.allclose(adapted.unet(x, t, hidden).sample, plain.unet(x, t, hidden).sample)
    fewer = sample_class_latents(plain, prompts[:1], 2, shape, **kwargs)[0]
    torch.testing.assert_close(fewer, reference[0][:2])  # a sample's seed: its prompt and index alone


def test_each_instance_draws_a_class_sample_of_its_own_metaclass():
    first = torch.full((4, 1, 2, 2), 10.0) + torch.arange(4).view(4, 1, 1, 1)  # 10 .. 13
    pools = [first, torch.full((3, 1, 2, 2), 20.0)]
    labels = torch.tensor([0, 2, 1, 2, 0])
    picks = draw_class_batch(pools, [0, 1, 0], labels, torch.Generator().manual_seed(0))
    assert picks.shape == (5, 1, 2, 2)
    assert [int(p.flatten()[0]) // 10 for p in picks] == [1, 1, 2, 1, 1]
    again = draw_class_batch(pools, [0, 1, 0], labels, torch.Generator().manual_seed(0))
    torch.testing.assert_close(picks, again)


def _fit(tiny_sd_dir, tmp_path, max_steps, ckpt_path=None, checkpoint_every=None, **settings):
    L.seed_everything(0)
    callbacks = []
    if checkpoint_every:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(
            dirpath=tmp_path / "ckpt", every_n_train_steps=checkpoint_every, save_top_k=-1))  # fmt: skip
    trainer = L.Trainer(
        max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks, enable_checkpointing=bool(checkpoint_every), default_root_dir=tmp_path,
    )  # fmt: skip
    model = ConceptLearner(pretrained=str(tiny_sd_dir), embedding_lr=1e-2, lora_lr=1e-3, lora_rank=4,
                           output_dir="", seed=0, **settings)  # fmt: skip
    dm = LabeledImageDataModule(dataset="fashion_mnist", shots=2, batch_size=4, image_size=32)
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return model, trainer


def _lora(model):
    return {n: p.detach().clone() for n, p in model.unet.named_parameters() if "lora_" in n}


def test_the_prior_loss_trains_the_lora_and_a_resumed_run_repeats_it(tiny_sd_dir, tmp_path):
    plain, _ = _fit(tiny_sd_dir, tmp_path / "plain", max_steps=3)
    preserved, trainer = _fit(tiny_sd_dir, tmp_path / "a", max_steps=3, **PRESERVE)
    assert "train/prior_loss" in trainer.callback_metrics
    metaclasses = len(set(preserved.metaclasses))
    assert [len(pool) for pool in preserved.class_latents] == [3] * metaclasses
    pairs = zip(_lora(plain).values(), _lora(preserved).values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)
    _fit(tiny_sd_dir, tmp_path / "b", max_steps=2, checkpoint_every=2, **PRESERVE)
    ckpt = next((tmp_path / "b" / "ckpt").glob("*.ckpt"))
    resumed, _ = _fit(tiny_sd_dir, tmp_path / "b", max_steps=3, ckpt_path=str(ckpt), **PRESERVE)
    for (name, value), other in zip(_lora(preserved).items(), _lora(resumed).values(), strict=True):
        torch.testing.assert_close(other, value, rtol=0, atol=1e-6, msg=name)
