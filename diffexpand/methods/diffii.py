"""Diff-II (Wang & Chen): inversion spherical interpolation with two-stage denoising.

1. Invert every real image of a class with DDIM, conditioned on its learned concept prompt (the pool).
2. For each synthetic image pick two inversions I_a, I_b of one class and move along their great circle:
   Z = sin((1+λ)α)/sin α · I_a − sin(λα)/sin α · I_b with λ ~ U[0, 2π/α].
3. Denoise Z: the steps with t >= T·(1 − split_ratio) (the noisier part; the official code's criterion)
   with "prompt + suffix", the rest with the plain prompt — suffixes add diversity, the plain finish
   keeps faithfulness.

A class with one real image has no pair: its inversion is paired with a seeded Gaussian latent of the
same norm (spherical moves between a real inversion and fresh noise), recorded as
`pair: "gaussian"` and warned about once per run. Two real images whose inversions are (anti)parallel
— duplicates in the dataset — have no great circle either: the record falls back to the same Gaussian
partner, with one warning per such pair naming both images.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from diffexpand.sampling import Schedule, angle_between, cfg_model_fn, ddim_invert, ddim_sample
from diffexpand.sampling.interpolation import spherical_inter_extrapolate
from diffexpand.suffixes import resolve_suffixes

from .base import ExpansionMethod, stack
from .common import conditions, decode, initial_noise
from .registry import register_method


@torch.no_grad()
def invert_latents(
    parts, latents: torch.Tensor, prompts: list[str], steps: int, guidance: float
) -> torch.Tensor:
    """DDIM inversion of clean latents to the start of a `steps`-step trajectory."""
    cond, uncond = conditions(parts, prompts)
    schedule = Schedule.from_scheduler(parts.scheduler, steps)
    return ddim_invert(cfg_model_fn(parts.unet, cond, uncond, guidance), latents, schedule)


def check_split_ratio(split_ratio: float) -> None:
    if not 0.0 <= split_ratio <= 1.0:
        raise ValueError(f"split_ratio must lie in [0, 1], got {split_ratio}")


def suffix_step_count(split_ratio: float, timesteps: torch.Tensor, num_train_timesteps: int) -> int:
    """Number of leading (noisiest) steps that use the suffixed prompt: those with t >= T·(1 − s), the
    official code's criterion (7 of 25 DDIM steps at s = 0.3 with T = 1000)."""
    check_split_ratio(split_ratio)
    return int((timesteps >= num_train_timesteps * (1 - split_ratio)).sum())


# Inversions closer than this to (anti)parallel (radians) count as one direction: the slerp weights
# divide by sin α, and λ ~ U[0, 2π/α] would walk millions of turns around a circle that is not there.
DEGENERATE_ANGLE = 1e-3


@register_method("diffii")
@dataclass
class DiffII(ExpansionMethod):
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    inversion_steps: int = 25  # paper: 25; official code: 200
    inversion_guidance: float = 1.0
    split_ratio: float = 0.3  # paper: 0.3 for 5-shot, 0.1 for 10-shot, 1.0 for long-tail
    # Suffix source, one of: a list, a file (one per line), a built-in preset (diffexpand.suffixes),
    # or generated from the real images by `suffix_captioner` + `suffix_llm` (see suffixes/generate.py).
    suffixes: list[str] = field(default_factory=list)
    suffix_file: str | None = None
    suffix_preset: str | None = None
    suffix_captioner: str | None = None
    suffix_llm: str | None = None  # local transformers model, or "openai:<model>" (URL/key from env)
    num_suffixes: int = 10
    negative_prompt: str = ""

    uses_concepts = True
    uses_inversions = True

    def __post_init__(self):
        check_split_ratio(self.split_ratio)
        if bool(self.suffix_captioner) != bool(self.suffix_llm):
            raise ValueError("generated suffixes need both suffix_captioner and suffix_llm")
        static = resolve_suffixes(self.suffixes, self.suffix_file, self.suffix_preset)
        if self.suffix_captioner and static:
            raise ValueError("give one suffix source: generated (suffix_captioner) or a list/file/preset")
        self.suffixes = static
        self._warned_single = False
        self._warned_pairs: set[tuple[str, ...]] = set()

    @property
    def needs_generated_suffixes(self) -> bool:
        return bool(self.suffix_captioner)

    def plan(self, ctx, label, rng, index=0) -> dict:
        members = ctx.source_ids[label]
        if not members:
            raise ValueError(f"class {ctx.class_names[label]!r} has no real image to invert")
        if len(members) >= 2:
            a, b = rng.choice(len(members), size=2, replace=False)
            pair, sources = "inversions", [members[int(a)], members[int(b)]]
        else:
            if not self._warned_single:
                warnings.warn(
                    f"class {ctx.class_names[label]!r} has a single real image: Diff-II pairs its "
                    "inversion with a seeded Gaussian latent instead of a second one "
                    "(recorded as pair='gaussian')",
                    stacklevel=2,
                )
                self._warned_single = True
            pair, sources = "gaussian", [members[0]]
        suffix = self.suffixes[int(rng.integers(len(self.suffixes)))] if self.suffixes else ""
        prompt = ctx.class_prompts[label]
        return {
            "source_ids": sources,
            "pair": pair,
            "lambda_fraction": float(rng.random()),  # λ = fraction · 2π/α, α known once inverted
            "suffix": suffix,
            "prompt": prompt,
            "prompt_with_suffix": f"{prompt} {suffix}".strip(),
            "split_ratio": self.split_ratio,
        }

    def partner_latents(self, parts, records: list[dict], inv_a: torch.Tensor) -> torch.Tensor:
        """I_b per record: the second inversion, or a Gaussian latent scaled to |I_a| (a single image,
        or two images whose inversions have no great circle between them)."""
        noise = initial_noise(parts, records, "partner")
        noise = noise * (inv_a.flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1)).reshape(-1, 1, 1, 1)
        out = []
        for i, r in enumerate(records):
            out.append(torch.as_tensor(r["inversion_b"]).to(inv_a) if r["pair"] == "inversions" else noise[i])
        inv_b = torch.stack(out)
        off_axis = (angle_between(inv_a, inv_b) - math.pi / 2).abs()
        degenerate = (off_axis > math.pi / 2 - DEGENERATE_ANGLE).tolist()
        for i, r in enumerate(records):
            if degenerate[i] and r["pair"] == "inversions":
                self._warn_degenerate(r)
                r["pair"] = "gaussian"
                inv_b[i] = noise[i]
        return inv_b

    def _warn_degenerate(self, record: dict) -> None:
        pair = tuple(record["source_ids"])
        if pair not in self._warned_pairs:
            self._warned_pairs.add(pair)
            warnings.warn(
                f"real images {pair[0]!r} and {pair[1]!r} of class "
                f"{record.get('class_name', record['label'])!r} "
                "have (anti)parallel inversions (duplicate images?): their records pair the inversion with "
                "a seeded Gaussian latent instead (recorded as pair='gaussian')",
                stacklevel=3,
            )

    @torch.no_grad()
    def generate(self, parts, records: list[dict]) -> torch.Tensor:
        inv_a = stack(records, "inversion_a", parts)
        inv_b = self.partner_latents(parts, records, inv_a)
        alpha = angle_between(inv_a, inv_b)
        fractions = torch.tensor([r["lambda_fraction"] for r in records], dtype=torch.float64)
        lam = fractions * (2 * math.pi / alpha.cpu())
        z = spherical_inter_extrapolate(inv_a, inv_b, lam.to(inv_a.device))
        for record, angle, walked in zip(records, alpha.tolist(), lam.tolist(), strict=True):
            record["alpha"], record["lambda"] = angle, walked

        with_suffix, uncond = conditions(
            parts, [r["prompt_with_suffix"] for r in records], self.negative_prompt
        )
        plain, _ = conditions(parts, [r["prompt"] for r in records], self.negative_prompt)
        schedule = Schedule.from_scheduler(parts.scheduler, self.num_inference_steps)
        first_plain = suffix_step_count(
            self.split_ratio, schedule.timesteps, parts.scheduler.config.num_train_timesteps
        )
        model_fn = cfg_model_fn(
            parts.unet, lambda i: with_suffix if i < first_plain else plain, uncond, self.guidance_scale
        )
        return decode(parts, ddim_sample(model_fn, z, schedule))
