"""DistDiff (Zhu et al., NeurIPS 2024): img2img from a real image, with distribution-aware energy
guidance at chosen steps pulling the sample toward its class prototype and nearest group prototype
of real-image features (diffexpand.guidance). Training-free.

Defaults follow the official code (DESIGN.md §4): DDIM 50 steps, strength 0.5, CFG 7.5, K = 3 group
prototypes, guidance at sampled step M = 20 with P = 2 rollout steps, ρ = 10, ε = 0.2, weights 1.0.
Steps count within the sampled part (strength 0.5 of 50 steps samples 25), and a step that does not
fit is an error — the official code silently skips guidance in that case.
Guidance needs gradients: run predict with `trainer.inference_mode: false` (the configs do).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from diffexpand.features import build_extractor
from diffexpand.guidance import EnergyGuidance, prototype_energy, resolve_guidance_steps
from diffexpand.guidance.prototypes import CLUSTERINGS
from diffexpand.models.vae import decode_latents
from diffexpand.sampling import Schedule, add_noise, cfg_model_fn, ddim_sample, sdedit_start_index
from diffexpand.sampling.ddim import ddim_step, predict_x0_eps

from .base import ExpansionMethod, pick_source, stack
from .common import conditions, decode, initial_noise
from .registry import register_method


@register_method("distdiff")
@dataclass
class DistDiff(ExpansionMethod):
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    strength: float = 0.5
    negative_prompt: str = ""
    extractor: str | dict = "timm"  # official code: a ResNet-50 trained on the real data
    groups: int = 3  # K group prototypes per class
    clustering: str = "kmeans"  # or "agglomerative" (average linkage, the official code)
    guidance_steps: int | str | list = 20  # M: index, "chaos" / "semantic" / "refinement", or a list
    rollout_steps: int = 2  # P
    step_size: float = 10.0  # ρ
    bound: float = 0.2  # ε
    class_weight: float = 1.0
    group_weight: float = 1.0
    iterations: int = 1
    variant: str = "residual"  # or "direct" (gradient on the latent)
    guidance: bool = True  # False: the same img2img without guidance (ablation, timing)
    # Recompute UNet/VAE activations in the backward pass. None: on for CUDA latents (SD at 512 px and
    # batch 8 needs more than 80 GB without it), off on CPU (the tiny prior fits; recomputing costs time).
    gradient_checkpointing: bool | None = None
    decode_chunk_size: int = 4  # guidance decodes x̂0 this many samples at a time, each chunk checkpointed
    # Guidance (rollouts, decode, features, backward) under the run's autocast too. Off: in float32 when
    # the UNet's weights are float32. Under bf16 its gradient turns the VAE's 1e-6 batch-size differences
    # into latent steps that moved images by 34 levels between batch 1 and 5
    # (tests/test_distdiff.py); on: faster, images then depend on the batch size.
    guidance_autocast: bool = False

    uses_sources = True
    uses_real_features = True

    def __post_init__(self):
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must lie in (0, 1], got {self.strength}")
        if self.rollout_steps < 1:
            raise ValueError(f"rollout_steps must be >= 1, got {self.rollout_steps}")
        if self.groups < 0:
            raise ValueError(f"groups (K group prototypes per class) must be >= 0 (0: class prototype only), "
                             f"got {self.groups}")  # fmt: skip
        if self.clustering not in CLUSTERINGS:
            raise ValueError(f"clustering must be one of {CLUSTERINGS}, got {self.clustering!r}")
        if self.decode_chunk_size < 1:
            raise ValueError(f"decode_chunk_size must be >= 1, got {self.decode_chunk_size}")
        self.start = sdedit_start_index(self.strength, self.num_inference_steps)
        sampled = self.num_inference_steps - self.start
        self.steps = resolve_guidance_steps(self.guidance_steps, sampled, self.rollout_steps)
        self.energy_guidance = EnergyGuidance(self.step_size, self.bound, self.iterations, self.variant)
        self.prototype_groups = self.groups
        self.feature_extractor = None

    fallback_note = "regenerated without autocast and without guidance"

    def generate_fallback(self, parts, records: list[dict]) -> torch.Tensor:
        guided, self.guidance = self.guidance, False
        try:
            return self.generate(parts, records)
        finally:
            self.guidance = guided

    def load_extractor(self):
        if self.feature_extractor is None:
            self.feature_extractor = build_extractor(self.extractor).requires_grad_(False)
        return self.feature_extractor

    def plan(self, ctx, label, rng) -> dict:
        return {
            "source_ids": [pick_source(ctx, label, rng)],
            "prompt": ctx.plain_prompts[label],
            "strength": self.strength,
            "guidance_steps": self.steps if self.guidance else [],
        }

    def _guidance_precision(self, parts, z: torch.Tensor):
        full = not self.guidance_autocast and parts.unet.dtype == torch.float32 == z.dtype
        return torch.autocast(z.device.type, enabled=False) if full else contextlib.nullcontext()

    def _call(self, fn, *args):
        wanted = self.gradient_checkpointing
        if (args[0].is_cuda if wanted is None else wanted) and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def energy_fn(self, parts, model_fn, schedule, records, index: int):
        """z at sampled step `index` -> per-sample energy of the x̂0 reached after P rollout steps."""
        protos = stack(records, "prototype", parts).float()
        groups = stack(records, "group_prototypes", parts).float()
        extractor = self.load_extractor()

        def energy_of(z: torch.Tensor) -> torch.Tensor:
            for j in range(self.rollout_steps):
                i = index + j
                t = schedule.timesteps[i].to(z.device)
                out = self._call(lambda x, t=t, i=i: model_fn(x, t, i), z)
                x0, _ = predict_x0_eps(out, z, schedule.alpha(i), schedule.prediction_type)
                if j + 1 < self.rollout_steps:
                    z = ddim_step(out, z, schedule.alpha(i), schedule.alpha(i + 1), schedule.prediction_type)
            chunks = x0.split(self.decode_chunk_size)
            images = torch.cat([self._call(lambda x: decode_latents(parts.vae, x), c) for c in chunks])
            images = images.float().clamp(-1, 1)
            features = extractor(images.to(extractor.mean.device))
            return prototype_energy(features, protos.to(features.device), groups.to(features.device),
                                    self.class_weight, self.group_weight)  # fmt: skip

        return energy_of

    @torch.no_grad()
    def generate(self, parts, records: list[dict]) -> torch.Tensor:
        if self.guidance and torch.is_inference_mode_enabled():
            raise RuntimeError(
                "DistDiff guidance needs gradients, but predict runs in inference mode: set "
                "`trainer.inference_mode: false` (configs/expand/distdiff.yaml does)"
            )
        schedule = Schedule.from_scheduler(parts.scheduler, self.num_inference_steps)
        source = stack(records, "source_latent", parts)
        x = add_noise(source, initial_noise(parts, records, "sdedit"), schedule.alpha(self.start))
        cond, uncond = conditions(parts, [r["prompt"] for r in records], self.negative_prompt)
        model_fn = cfg_model_fn(parts.unet, cond, uncond, self.guidance_scale)
        guide_at = {self.start + m for m in self.steps} if self.guidance else set()
        energies, failures = [], []  # kept on the device; read once after sampling (no sync per step)

        def before_step(i: int, z: torch.Tensor) -> torch.Tensor:
            if i not in guide_at:
                return z
            energy_of = self.energy_fn(parts, model_fn, schedule, records, i)
            with self._guidance_precision(parts, z):
                result = self.energy_guidance.apply(z, energy_of)
            energies.append(result.energy.detach())
            failures.append(result.failed)
            return result.latents

        latents = ddim_sample(model_fn, x, schedule, self.start, before_step=before_step)
        energy = torch.stack(energies, 1).tolist() if energies else [[] for _ in records]
        failed = torch.stack(failures, 1).any(1).tolist() if failures else [False] * len(records)
        for r, e, f in zip(records, energy, failed, strict=True):
            r["guidance_energy"], r["guidance_fallback"] = e, bool(f)
        return decode(parts, latents)
