"""DreamBooth's prior preservation in concept learning: the class prompt, class samples drawn from the prior
with the LoRA switched off (so a resumed run draws the same), one per instance from its metaclass's pool, and
the settings it refuses. A training run with it (the loss it adds, a resume): tests/test_concepts.py."""

import math

import pytest
import torch

from diffexpand.concepts import add_shared_lora
from diffexpand.concepts.prior_preservation import draw_class_batch, metaclass_prompt, sample_class_latents
from diffexpand.models import load_sd_components
from lightning_modules.concept import ConceptLearner


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
