"""Does the prior really know its categories? Measured with the oracle, not by eye."""

from __future__ import annotations

import torch

from diffexpand.data.fashion_mnist import METACLASS_OF_CLASS, METACLASSES
from diffexpand.methods.record import Batch, Record
from diffexpand.methods.txt2img import Txt2Img
from diffexpand.seeding import sample_seed
from diffexpand.training.losses import psnr


@torch.no_grad()
def generate_for_prompt(
    parts,
    prompt: str,
    n: int,
    steps: int,
    guidance: float,
    seed: int,
    batch: int = 100,
    key: str | None = None,
):
    """n images in [-1, 1] for one prompt, each from its own seed (derived from `key`, default the
    prompt: pass the same key to compare two prompts on the same starting noise)."""
    key = prompt if key is None else key
    method = Txt2Img(num_inference_steps=steps, guidance_scale=guidance)
    images = []
    for start in range(0, n, batch):
        ids = [f"{key}/{i}" for i in range(start, min(n, start + batch))]
        records = [Record(i, 0, prompt, sample_seed(seed, i), method.name, {"prompt": prompt}) for i in ids]
        images.append(method.generate(parts, Batch.of(records)).images.clamp(-1, 1))
    return torch.cat(images)


@torch.no_grad()
def metaclass_accuracy(
    parts,
    oracle,
    n_per_metaclass: int = 200,
    steps: int = 25,
    guidance: float = 7.5,
    seed: int = 0,
    template: str = "a photo of a {}",
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Fraction of samples of "a photo of a {metaclass}" that the oracle puts in a fine class inside
    that metaclass, per metaclass; also returns the samples."""
    accuracy, samples = {}, {}
    for meta in METACLASSES:
        images = generate_for_prompt(parts, template.format(meta), n_per_metaclass, steps, guidance, seed)
        predicted = oracle(images.to(next(oracle.parameters()).device)).argmax(1).cpu()
        accuracy[meta] = sum(METACLASS_OF_CLASS[int(p)] == meta for p in predicted) / len(predicted)
        samples[meta] = images
    return accuracy, samples


@torch.no_grad()
def vae_reconstruction_psnr(vae, images: torch.Tensor, batch: int = 500) -> float:
    """Mean PSNR (dB, [0, 1] scale) of VAE reconstructions (posterior mean) of images in [-1, 1]."""
    values = []
    for chunk in images.split(batch):
        recon = vae.decode(vae.encode(chunk).latent_dist.mean).sample
        values.append(psnr(recon, chunk))
    return torch.cat(values).mean().item()
