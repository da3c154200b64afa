"""DreamBooth's prior preservation (Ruiz et al., CVPR 2023, eq. 2) for concept learning.

A LoRA fitted to five images per class can drift until the prior draws those five images for any prompt of
their metaclass, and learned tokens ride on what the prior means by "shoe" or "top". DreamBooth keeps the
prior's own class distribution: before training it samples images of each class from the frozen prior
("a photo of a shoe"), and every step adds the denoising loss on those samples, with the class prompt,
weighted by λ. Here the class samples stay latents (the UNet trains on latents; decoding and encoding them
again would only add the VAE's error), drawn with the adapters off, so a run resumed with a trained LoRA
draws the same ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffexpand.models.text import encode_prompts
from diffexpand.sampling import cfg_model_fn, sample, schedule_for
from diffexpand.seeding import sample_seed, seeded_randn

SAMPLING_BATCH = 32  # class samples denoised together


def metaclass_prompt(template: str, metaclass: str) -> str:
    """The class prompt: the concept prompt without its learned tokens ("a photo of a {tokens} {metaclass}"
    becomes "a photo of a shoe"), so it names what the prior already knows."""
    return " ".join(template.format(tokens="", metaclass=metaclass).split())


@torch.no_grad()
def sample_class_latents(
    parts,
    prompts: list[str],
    per_prompt: int,
    latent_shape: tuple[int, int, int],
    *,
    steps: int,
    guidance_scale: float,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> list[torch.Tensor]:
    """`per_prompt` latents of shape `latent_shape` for each prompt, sampled from the prior with its UNet's
    adapters (the LoRA being trained) switched off: DDIM, `steps` steps, classifier-free guidance
    `guidance_scale` against the empty prompt. `progress(n)` is told of every n latents made."""
    unet = parts.unet
    adapters, training = bool(getattr(unet, "_hf_peft_config_loaded", False)), unet.training
    if adapters:
        unet.disable_adapters()
    unet.eval()
    try:
        schedule = schedule_for(parts.scheduler, steps, "ddim")
        uncond = encode_prompts(parts.tokenizer, parts.text_encoder, [""])
        pools = []
        for prompt in prompts:
            cond = encode_prompts(parts.tokenizer, parts.text_encoder, [prompt])
            made = []
            for start in range(0, per_prompt, SAMPLING_BATCH):
                n = min(SAMPLING_BATCH, per_prompt - start)
                # each sample's noise from (run seed, prompt, index): the same on a resume, on every DDP
                # rank and whatever the other classes are
                seeds = [sample_seed(seed, f"prior-preservation:{prompt}:{start + i}") for i in range(n)]
                noise = seeded_randn(seeds, latent_shape, unet.device, unet.dtype)
                both = cond.expand(n, -1, -1), uncond.expand(n, -1, -1)
                model_fn = cfg_model_fn(unet, *both, guidance_scale)
                made.append(sample(model_fn, noise, schedule))
                if progress is not None:
                    progress(n)
            pools.append(torch.cat(made))
        return pools
    finally:
        unet.train(training)
        if adapters:
            unet.enable_adapters()


def draw_class_batch(
    pools: list[torch.Tensor], metaclass_of_label: list[int], labels: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """One class latent per instance in the batch, from the pool of that instance's metaclass, drawn with
    the step's generator (so a resumed step draws the same)."""
    picks = []
    for label in labels.tolist():
        pool = pools[metaclass_of_label[int(label)]]
        index = int(torch.randint(len(pool), (1,), generator=generator, device=generator.device))
        picks.append(pool[index])
    return torch.stack(picks)
