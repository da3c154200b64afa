"""DistDiff's hierarchical prototype energy guidance as a part any DDIM-sampling method can take on.

A method that mixes in `PrototypeGuidance` gets its settings (the dataclass fields below), the class and
group prototypes of the real images' features (`prototypes`, cached), each record's share of them
(`prototype_inputs`) and `guided_sample`: DDIM sampling whose `before_step` hook replaces the latent at
each guidance step by the energy-guided one (diffexpand.guidance.EnergyGuidance), with what it measured
per record (`guidance_energy` per guided step, `guidance_fallback`, `guidance_timesteps`). The method
says where its sampling starts (`resolve_guidance`: DistDiff after its SDEdit strength, Diff-II + DistDiff
at the first step of the full schedule) and how the model is called (its `model_fn`: CFG, Diff-II's
prompt switch), so the rollouts see exactly the network calls sampling makes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from diffexpand.guidance import EnergyGuidance, prototype_energy, resolve_guidance_steps
from diffexpand.guidance.energy import DISTANCES
from diffexpand.guidance.prototypes import (
    CLUSTERINGS,
    class_prototype,
    faiss_gpu_available,
    hierarchical_prototypes,
)
from diffexpand.models.vae import decode_latents
from diffexpand.sampling import Schedule, sample
from diffexpand.sampling.ddim import ddim_step, predict_x0_eps

from .common import stream_seeds
from .inputs import UsesFeatureExtractor, Workspace, features_by_class, real_features
from .record import Batch, Generated, Record


@dataclass
class PrototypeGuidance(UsesFeatureExtractor):
    """Energy guidance toward each record's class prototype and nearest group prototype (DistDiff).

    Args:
        extractor: the feature extractor (a name or a dict of settings; see diffexpand.features); the
            official code uses a ResNet-50 trained on the real data.
        groups: K group prototypes per class; 0: the class prototype only.
        clustering: "kmeans" (FAISS) or "agglomerative" (average linkage, Euclidean: the official code).
        guidance_steps: M, counted from the clean end of the full schedule (official), a stage name
            ("chaos", "semantic", "refinement": middles of the sampled part's thirds), or a list.
        rollout_steps: P: DDIM steps rolled out from each guided latent; the energy averages their x̂0.
        step_size: ρ, the step on the residual transform's (α, β).
        bound: ε, the L∞ radius around the unguided latent the guided one is projected into.
        class_weight: λ_c, weight of the distance to the class prototype.
        group_weight: λ_g, weight of the distance to the nearest group prototype.
        energy: "l2" (official) or "cosine".
        normalize_features: L2-normalise the extracted features first (the official code does not).
        iterations: guidance steps per guided latent.
        variant: "residual" (official), "residual_zero" (α = β = 0 start, clamped) or "direct".
        guidance: False: the same sampling without guidance (ablation, timing).
        gradient_checkpointing: recompute UNet/VAE activations in the backward pass; None: on for CUDA
            latents (SD at 512 px and batch 8 does not fit one GPU without it: docs/measurements/
            2026-11-23.md), off on CPU.
        decode_chunk_size: guidance decodes x̂0 this many samples at a time, each chunk checkpointed.
        clamp_decoded: clamp the decoded x̂0 to [−1, 1] before the extractor, so saturated pixels pass no
            gradient. Off (the official code): the extractor sees x̂0 as decoded. Both gave the same
            classifier gain on the validation split (docs/measurements/2026-12-06-distdiff-guidance-clamp.md).
        restart_solver: a multistep solver (DPM-Solver++ 2M, UniPC) forgets its history at each guided
            step, so the step from the guided latent is first order and does not reuse the prediction
            made at the unguided one; False: it keeps it. DDIM (the official solver) has no history
            (docs/measurements/2026-12-06-distdiff-solver-restart.md).
        guidance_autocast: run guidance (rollouts, decode, features, backward) under the run's autocast
            too. Off: float32 when the UNet's weights are float32, because under bf16 the gradient turns
            the VAE's tiny batch-size differences into visible moves; on: faster, images depend on
            batch size.
    """

    extractor: str | dict = "timm"
    groups: int = 3
    clustering: str = "kmeans"
    guidance_steps: int | str | list = 20
    rollout_steps: int = 2
    step_size: float = 10.0
    bound: float = 0.2
    class_weight: float = 1.0
    group_weight: float = 1.0
    energy: str = "l2"
    normalize_features: bool = False
    iterations: int = 1
    variant: str = "residual"
    guidance: bool = True
    gradient_checkpointing: bool | None = None
    decode_chunk_size: int = 4
    clamp_decoded: bool = False
    restart_solver: bool = True
    guidance_autocast: bool = False

    def resolve_guidance(self, num_inference_steps: int, start: int, strength: float | None = None) -> None:
        """Check the guidance settings and fix where guidance runs, for sampling that starts at index
        `start` of the full `num_inference_steps` schedule (`strength`: the setting that put the start
        there, named in the error when M does not fit)."""
        if self.rollout_steps < 1:
            raise ValueError(f"rollout_steps must be >= 1, got {self.rollout_steps}")
        if self.groups < 0:
            raise ValueError(
                f"groups (K group prototypes per class) must be >= 0 (0: class prototype only), "
                f"got {self.groups}"
            )
        if self.clustering not in CLUSTERINGS:
            raise ValueError(f"clustering must be one of {CLUSTERINGS}, got {self.clustering!r}")
        if self.energy not in DISTANCES:
            raise ValueError(f"energy must be one of {DISTANCES}, got {self.energy!r}")
        if self.decode_chunk_size < 1:
            raise ValueError(f"decode_chunk_size must be >= 1, got {self.decode_chunk_size}")
        self.guide_indices = resolve_guidance_steps(
            self.guidance_steps, num_inference_steps, start, self.rollout_steps, strength
        )
        self.energy_guidance = EnergyGuidance(self.step_size, self.bound, self.iterations, self.variant)

    fallback_note = "regenerated without autocast and without guidance"

    def generate_fallback(self, parts, batch: Batch) -> Generated:
        guided, self.guidance = self.guidance, False
        try:
            return self.generate(parts, batch)
        finally:
            self.guidance = guided

    def prototypes(self, ws: Workspace) -> dict[int, tuple[torch.Tensor, torch.Tensor | None]]:
        """{class: (class prototype, K group prototypes or None)} from the cached real features; the
        group clustering is cached too (keyed by the features, K, clustering and seed)."""
        features, features_key = real_features(ws, self.name, self.feature_extractor())
        by_class = features_by_class(ws, features)
        if self.groups <= 0:
            return {c: (class_prototype(f), None) for c, f in by_class.items()}
        classes, model = sorted(by_class), ws.model
        settings = [self.groups, self.clustering, ws.seed]
        # k-means runs in FAISS on the GPU when the features are there and FAISS has a GPU build
        backend = "faiss-gpu" if model.target_device().type == "cuda" and faiss_gpu_available() else "cpu"

        def build():
            device = model.device()
            on_device = {c: f.to(device) for c, f in by_class.items()}
            protos = hierarchical_prototypes(on_device, *settings, class_names=ws.ctx.class_names)
            return {
                "classes": torch.stack([protos[c][0] for c in classes]),
                "groups": torch.stack([protos[c][1] for c in classes]),
            }

        width = next((f.shape[-1] for f in by_class.values()), None)  # the extractor's feature width
        expect = {"classes": (len(classes), width), "groups": (len(classes), self.groups, width)}
        depends_on = {"features": features_key, "settings": settings, "classes": classes, "backend": backend}
        cached = ws.cached("prototypes", build, expect, **depends_on)
        return {c: (cached["classes"][i], cached["groups"][i]) for i, c in enumerate(classes)}

    def prototype_inputs(self, record: Record, prepared: dict) -> dict[str, torch.Tensor]:
        """The record's class prototype and, with K > 0, its class's group prototypes."""
        protos, groups = prepared["prototypes"][record.label]
        return {"prototype": protos} | ({"group_prototypes": groups} if groups is not None else {})

    def guidance_timesteps(self, schedule: Schedule) -> list[int]:
        """The timesteps whose x̂0 the energy is measured on (descending): each guidance step's window."""
        steps = range(self.rollout_steps)
        window = {int(schedule.timesteps[i + j]) for i in self.guide_indices for j in steps}
        return sorted(window, reverse=True)

    def _guidance_precision(self, parts, z: torch.Tensor):
        full = not self.guidance_autocast and parts.unet.dtype == torch.float32 == z.dtype
        return torch.autocast(z.device.type, enabled=False) if full else contextlib.nullcontext()

    def _call(self, fn, *args):
        wanted = self.gradient_checkpointing
        if (args[0].is_cuda if wanted is None else wanted) and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def transform_start(
        self, records: list[Record], index: int, z: torch.Tensor
    ) -> list[torch.Tensor] | None:
        """Per record and channel: α ~ U[0, 1), β ~ N(0, 1) from the record's seed (one stream per
        guidance step), so the start does not depend on batch size or rank."""
        if self.variant != "residual":
            return None
        channels = z.shape[1]
        gens = [torch.Generator().manual_seed(s) for s in stream_seeds(records, f"transform{index}")]
        alpha = torch.stack([torch.rand(channels, generator=g) for g in gens])
        beta = torch.stack([torch.randn(channels, generator=g) for g in gens])
        return [alpha.to(z.device), beta.to(z.device)]

    def features_energy(
        self, features: torch.Tensor, protos: torch.Tensor, groups: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-sample energy of extracted features against their class (and group) prototypes, with
        this method's weights and distance (guidance and its benchmark measure the same thing)."""
        groups = groups if self.groups > 0 else None
        weights = (self.class_weight, self.group_weight)
        return prototype_energy(features, protos, groups, *weights, self.energy, self.normalize_features)

    def energy_fn(self, parts, model_fn, schedule, batch: Batch, index: int):
        """z at full-schedule step `index` -> per-sample energy, averaged over the x̂0 of the P rollout
        steps from there (the official `transform_guidance`'s score over `sub_timesteps`)."""
        extractor = self.feature_extractor()
        on = extractor.mean.device  # prototypes moved to the extractor once, not once per rollout step
        protos = batch.stack("prototype").to(on, torch.float32)
        groups = batch.stack("group_prototypes").to(on, torch.float32) if self.groups > 0 else None

        def features_of(x0: torch.Tensor) -> torch.Tensor:
            chunks = x0.split(self.decode_chunk_size)
            images = torch.cat([self._call(lambda x: decode_latents(parts.vae, x), c) for c in chunks])
            images = images.float()
            return extractor((images.clamp(-1, 1) if self.clamp_decoded else images).to(on))

        def energy_of(z: torch.Tensor) -> torch.Tensor:
            total = 0.0
            for j in range(self.rollout_steps):
                i = index + j
                t = schedule.timesteps[i].to(z.device)
                out = self._call(lambda x, t=t, i=i: model_fn(x, t, i), z)
                x0, _ = predict_x0_eps(out, z, schedule.alpha(i), schedule.prediction_type)
                total = total + self.features_energy(features_of(x0), protos, groups)
                if j + 1 < self.rollout_steps:
                    z = ddim_step(out, z, schedule.alpha(i), schedule.alpha(i + 1), schedule.prediction_type)
            return total / self.rollout_steps

        return energy_of

    def refuse_inference_mode(self) -> None:
        if self.guidance and torch.is_inference_mode_enabled():
            raise RuntimeError(
                f"{type(self).__name__} guidance needs gradients, but predict runs in inference mode: set "
                f"`trainer.inference_mode: false` (configs/expand/{self.name}.yaml does)"
            )

    def guided_sample(
        self, parts, model_fn, x: torch.Tensor, schedule: Schedule, batch: Batch, start: int = 0
    ) -> tuple[torch.Tensor, list[dict]]:
        """Sample `x` from step `start` with `model_fn` and the schedule's solver, guiding the latent at
        each guidance step; the clean latents and, per record, the energy at each guided step (of the
        transformed start), whether guidance gave up on it (non-finite energy or gradient) and the
        measured timesteps."""
        self.refuse_inference_mode()
        records = batch.records
        guide_at = set(self.guide_indices) if self.guidance else set()
        energies, failures = [], []  # kept on the device; read once after sampling (no sync per step)

        def before_step(i: int, z: torch.Tensor) -> torch.Tensor:
            if i not in guide_at:
                return z
            energy_of = self.energy_fn(parts, model_fn, schedule, batch, i)
            with self._guidance_precision(parts, z):
                result = self.energy_guidance.apply(z, energy_of, self.transform_start(records, i, z))
            energies.append(result.energy.detach())
            failures.append(result.failed)
            return result.latents

        latents = sample(
            model_fn, x, schedule, start, before_step=before_step, restart_after_replace=self.restart_solver
        )
        energy = torch.stack(energies, 1).tolist() if energies else [[] for _ in records]
        failed = torch.stack(failures, 1).any(1).tolist() if failures else [False] * len(records)
        timesteps = self.guidance_timesteps(schedule) if self.guidance else []
        extras = [
            {"guidance_energy": e, "guidance_fallback": bool(f), "guidance_timesteps": timesteps}
            for e, f in zip(energy, failed, strict=True)
        ]
        return latents, extras
