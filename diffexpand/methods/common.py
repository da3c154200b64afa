"""Pieces every expansion method shares: prompt conditioning, seeded noise, SDEdit, decoding."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from diffexpand.models.text import encode_prompts
from diffexpand.models.vae import decode_latents
from diffexpand.sampling import add_noise, sample, sdedit_start_index
from diffexpand.seeding import seeded_randn

from .record import Record


@dataclass
class PlanContext:
    """What a method may look at when it plans one synthetic image: the real subset by class and the
    prompts of each class. Nothing here is random; randomness comes from the sample's own generator."""

    class_names: list[str]
    metaclasses: list[str]
    source_ids: list[list[str]]  # real image ids per class
    class_prompts: list[str]  # "a photo of a <class_i> shoe" with concepts, else "a photo of a Sneaker"
    plain_prompts: list[str]  # class-name prompts, for methods that do not use learned tokens

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def sample_rng(seed: int) -> np.random.Generator:
    """The sample's own generator: every random choice of one synthetic image is drawn from it."""
    return np.random.default_rng(seed)


def latent_shape(parts) -> tuple[int, int, int]:
    size = parts.unet.config.sample_size
    return (parts.unet.config.in_channels, size, size)


def initial_noise(
    parts, records: list[Record], stream: str = "noise", shape: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Per-sample N(0, I) latents from each record's seed (`stream` separates independent draws).
    `shape` is one latent's: that of the real latents the noise is added to, which follows the data's
    image size rather than the UNet's nominal `sample_size` (SD-1.5 at 256 px); txt2img leaves it out."""
    seeds = stream_seeds(records, stream)
    return seeded_randn(seeds, tuple(shape or latent_shape(parts)), parts.unet.device, parts.unet.dtype)


def stream_seeds(records: list[Record], stream: str) -> list[int]:
    """One seed per record for the named random stream, a function of (record seed, stream name)."""
    return [int(np.random.default_rng([r.seed, hash_stream(stream)]).integers(2**62)) for r in records]


def hash_stream(name: str) -> int:
    """A 64-bit number from the whole stream name ("candidate0" and "candidate1" differ)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def encode_unique(parts, prompts: list[str]) -> torch.Tensor:
    """Text embeddings per prompt, running the text encoder once per distinct prompt."""
    unique = list(dict.fromkeys(prompts))
    embeddings = encode_prompts(parts.tokenizer, parts.text_encoder, unique)
    index = torch.tensor([unique.index(p) for p in prompts], device=embeddings.device)
    return embeddings.index_select(0, index)


def conditions(parts, prompts: list[str], negative_prompt: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt, negative prompt) embeddings for a batch; each distinct prompt is encoded once."""
    return encode_unique(parts, prompts), encode_unique(parts, [negative_prompt] * len(prompts))


@torch.no_grad()
def sdedit(
    parts,
    source_latents: torch.Tensor,
    records: list[Record],
    strengths: list[float],
    steps: int,
    guidance: float,
    negative_prompt: str,
    denoising,
) -> torch.Tensor:
    """SDEdit (Meng et al. 2022): noise each source latent to its strength's step, then denoise with
    its record's prompt, by `denoising`'s solver and guidance interval (a `DenoisingSettings`). Samples
    are grouped by start step, so one batch may mix strengths."""
    schedule = denoising.schedule(parts, steps)
    starts = [sdedit_start_index(s, steps) for s in strengths]
    noise = initial_noise(parts, records, "sdedit", source_latents.shape[1:])
    out = source_latents.clone()
    for start in sorted(set(starts)):
        idx = [i for i, s in enumerate(starts) if s == start]
        if start >= steps:  # strength 0: nothing to do
            continue
        sub = torch.tensor(idx, device=out.device)
        x = add_noise(source_latents[sub], noise[sub], schedule.alpha(start))
        cond, uncond = conditions(parts, [records[i]["prompt"] for i in idx], negative_prompt)
        model_fn = denoising.guided_model_fn(parts, cond, uncond, guidance, schedule)
        out[sub] = sample(model_fn, x, schedule, start)
    return out


# The VAE decoder's activations at 512 px are large (docs/measurements/2026-11-23.md): decoding a batch of
# 32 (or Real-Filter's 4 candidates x 32) at once would need tens of GB for no speed gain; chunks of 8
# keep the GPU as busy.
DECODE_CHUNK = 8


@torch.no_grad()
def decode(parts, latents: torch.Tensor) -> torch.Tensor:
    return torch.cat(
        [decode_latents(parts.vae, chunk).float().clamp(-1, 1) for chunk in latents.split(DECODE_CHUNK)]
    )
