"""DistDiff (Zhu et al., NeurIPS 2024): img2img from a real image, with distribution-aware energy
guidance pulling the sample toward its class prototype and nearest group prototype of real-image
features (diffexpand.guidance). Training-free.

Defaults follow the official code (haoweiz23/DistDiff `generate_data.py`, `transform_guidance`):
- DDIM 50 steps, strength 0.5 (sampling starts at t = 481), CFG 7.5, K = 3 group prototypes.
- Guidance at M = 20 counted from the clean end of the full schedule, with P = 2 rollout steps:
  t = 381 and 361 (diffexpand.guidance.timing). Every record states them as `guidance_timesteps`.
- Residual transform: channel-wise α ~ U[0, 1), β ~ N(0, 1) drawn from the record's seed;
  z' = z·(1 + α) + β; one step of size ρ = 10 on (α, β); the result is projected into the L∞ ball of
  radius ε = 0.2 around z.
- Energy, averaged over the x̂0 of each of the P rollout steps:
  λ_c·‖f − ĉ‖₂ + λ_g·‖f − ĝ_k*‖₂, with f the extractor's (unnormalised) features of the decoded x̂0,
  ĉ and ĝ the L2-normalised class and group prototypes, k* the group of largest f·ĝ, λ_c = λ_g = 1.
  `energy: cosine` uses 1 − cos instead; `normalize_features: true` normalises f first.
- Sources: each real image is expanded in turn (record k of a class starts from its image k mod n),
  so every real image is a source exactly `expansion_ratio` times, as in the official code.

Differences kept on purpose: the feature extractor applies its own input preprocessing (the official
code feeds [-1, 1] images to an ImageNet ResNet-50 without its normalisation), and a guidance step that
does not fit the sampled part is an error (the official code silently skips guidance then).
Guidance needs gradients: run predict with `trainer.inference_mode: false` (the configs do). The
guidance itself (its settings, the prototypes, the sampling hook) is `PrototypeGuidance`
(prototype_guidance.py), which Diff-II + DistDiff shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffexpand.sampling import add_noise, sdedit_start_index

from .base import ExpansionMethod, cycle_source, document_inherited_settings
from .common import conditions, decode, initial_noise
from .denoising import DenoisingSettings
from .inputs import Workspace, real_latents
from .prototype_guidance import PrototypeGuidance
from .record import Batch, Generated, Record
from .registry import register_method


@register_method("distdiff")
@document_inherited_settings
@dataclass
class DistDiff(PrototypeGuidance, DenoisingSettings, ExpansionMethod):
    """DistDiff: img2img from a real image with energy guidance toward its class's feature prototypes.

    Args:
        num_inference_steps: DDIM steps of the full schedule.
        guidance_scale: classifier-free guidance scale.
        strength: SDEdit strength: sampling starts after the first (1 − strength) of the steps.
        negative_prompt: the unconditional prompt of classifier-free guidance.
    """

    # the guidance settings (extractor, groups, guidance_steps, step_size …) are PrototypeGuidance's
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    strength: float = 0.5
    negative_prompt: str = ""

    def __post_init__(self):
        self.check_denoising_settings()
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must lie in (0, 1], got {self.strength}")
        self.start = sdedit_start_index(self.strength, self.num_inference_steps)
        self.resolve_guidance(self.num_inference_steps, self.start, self.strength)

    def prepare(self, ws: Workspace) -> dict:
        return {"latents": real_latents(ws, self.name), "prototypes": self.prototypes(ws)}

    def inputs_for(self, record: Record, prepared: dict) -> dict[str, torch.Tensor]:
        source = {"source_latent": prepared["latents"][record["source_ids"][0]]}
        return source | self.prototype_inputs(record, prepared)

    def plan(self, ctx, label, rng, index=0) -> dict:
        return {
            "source_ids": [cycle_source(ctx, label, index)],
            "prompt": ctx.plain_prompts[label],
            "strength": self.strength,
        }

    @torch.no_grad()
    def generate(self, parts, batch: Batch) -> Generated:
        schedule = self.schedule(parts, self.num_inference_steps)
        source = batch.stack("source_latent").to(parts.unet.device, parts.unet.dtype)
        noise = initial_noise(parts, batch.records, "sdedit", source.shape[1:])
        x = add_noise(source, noise, schedule.alpha(self.start))
        cond, uncond = conditions(parts, batch.values("prompt"), self.negative_prompt)
        model_fn = self.guided_model_fn(parts, cond, uncond, self.guidance_scale, schedule)
        latents, extras = self.guided_sample(parts, model_fn, x, schedule, batch, self.start)
        return Generated(decode(parts, latents), extras)
