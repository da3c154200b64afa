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


# The Fashion-MNIST test split's metaclass mix, per 10 images (4 tops, 1 trousers, 1 dress, 3 shoes,
# 1 bag): realism samples follow it, so a set of equal size is compared with like.
def metaclass_mix(n: int) -> dict[str, int]:
    """How many of n realism samples each metaclass gets: the real class mix (n a multiple of 10)."""
    if n % 10:
        raise ValueError(f"the realism sample count must be a multiple of 10, got {n}")
    return {meta: n // 10 * METACLASS_OF_CLASS.count(meta) for meta in METACLASSES}


@torch.no_grad()
def realism(
    parts,
    oracle,
    real_reference: torch.Tensor,
    real_held_out: torch.Tensor,
    n: int = 500,
    steps: int = 25,
    guidances: tuple[float, ...] = (7.5,),
    seed: int = 0,
    template: str = "a photo of a {}",
) -> dict[str, float]:
    """Fréchet distances (oracle features) to `real_reference` of: n held-out real images (the floor
    for a set of that size), the same with every second one mirrored (the floor for a prior trained
    with mirror augmentation), their VAE reconstructions (what the autoencoder alone loses), and n
    metaclass samples in the real class mix at each CFG scale. Every image is rounded to uint8 levels
    first, as a set on disk is."""
    from .synthetic_quality import frechet_distance, oracle_outputs

    def features(images):
        quantised = ((images.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
        return oracle_outputs(oracle, quantised)[1]

    reference = features(real_reference)
    held_out = real_held_out[:n]
    vae = parts.vae
    recon = torch.cat(
        [vae.decode(vae.encode(chunk).latent_dist.mean).sample for chunk in held_out.split(100)]
    )
    # Every second image mirrored: the floor of a prior trained with mirror augmentation, which draws
    # either orientation while Fashion-MNIST's shoes, say, nearly all face one way.
    half_mirrored = held_out.clone()
    half_mirrored[1::2] = half_mirrored[1::2].flip(-1)
    result = {
        "real_images": frechet_distance(features(held_out), reference),
        "real_images_half_mirrored": frechet_distance(features(half_mirrored), reference),
        "vae_reconstructions": frechet_distance(features(recon), reference),
    }
    for guidance in guidances:
        samples = torch.cat(
            [
                generate_for_prompt(parts, template.format(meta), count, steps, guidance, seed)
                for meta, count in metaclass_mix(n).items()
            ]
        )
        result[f"samples_cfg{guidance:g}"] = frechet_distance(features(samples), reference)
    return result


@torch.no_grad()
def attribute_accuracy(
    parts,
    captioner,
    n: int = 50,
    steps: int = 25,
    guidance: float = 7.5,
    seed: int = 0,
    template: str = "a photo of a {}",
) -> dict[str, dict[str, float]]:
    """Does "a photo of a top, dark" give dark tops? For each metaclass and attribute, n samples with
    each of its two words from the same starting noises. Per attribute: `paired` = share of noises where
    the low word's sample measures lower than the high word's (chance 0.5); `in_third` = share of
    samples that land in their word's third of the metaclass on the training split (chance 1/3)."""
    from diffexpand.data.attributes import (
        ATTRIBUTE_WORDS,
        attribute_caption,
        images_to_gray_uint8,
        measure_attributes,
    )

    out: dict[str, dict[str, float]] = {}
    for name, (low_word, high_word) in ATTRIBUTE_WORDS.items():
        paired, in_third = [], []
        for meta in METACLASSES:
            low_t, high_t = captioner.thresholds[meta][name]
            values = {}
            for word in (low_word, high_word):
                prompt = attribute_caption(template, meta, (word,))
                images = generate_for_prompt(parts, prompt, n, steps, guidance, seed, key=f"{meta}/{name}")
                values[word] = measure_attributes(images_to_gray_uint8(images))[name]
            paired += (values[low_word] < values[high_word]).tolist()
            in_third += (values[low_word] < low_t).tolist() + (values[high_word] > high_t).tolist()
        out[name] = {"paired": sum(paired) / len(paired), "in_third": sum(in_third) / len(in_third)}
    return out


def mirror_agreement(images: torch.Tensor, template: torch.Tensor) -> float:
    """Share of images (N, C, H, W) that face the way `template` (C, H, W) does: each image, centred, is
    correlated with the centred template and with its mirror image, and counts when the first is larger."""
    centred = images - images.mean((1, 2, 3), keepdim=True)
    template = template - template.mean()
    same = (centred * template).sum((1, 2, 3))
    mirrored = (centred * template.flip(-1)).sum((1, 2, 3))
    return (same > mirrored).float().mean().item()


def orientation_agreement(
    samples: dict[str, torch.Tensor], real_images: torch.Tensor, real_labels
) -> dict[str, dict[str, float]]:
    """Per metaclass, how many of its samples face the way real images of it do (the template being the
    mean real image of the metaclass), beside the same share for the real images themselves. A prior
    that learned the data's orientation scores near the real share; one that draws either way, near 0.5."""
    metaclass_of = [METACLASS_OF_CLASS[int(label)] for label in real_labels]
    out = {}
    for meta, images in samples.items():
        real = real_images[[i for i, m in enumerate(metaclass_of) if m == meta]]
        if not len(real):
            raise ValueError(f"no real image of metaclass {meta!r} to take its orientation from")
        template = real.mean(0)
        out[meta] = {"samples": mirror_agreement(images, template), "real": mirror_agreement(real, template)}
    return out
