"""Real-Filter: txt2img, keeping only samples whose image features are close to the real images of
their class. Each record draws `candidates` txt2img samples from its own seed and keeps the one with
the highest cosine similarity to its class's real-feature mean (its prototype); every candidate's
score is recorded (`candidate_scores`). Candidates come from independent seed streams ("candidate0",
…) of the record's seed. A per-sample selection, so the result does not depend on batch size, world
size or resume points."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffexpand.features import normalized
from diffexpand.guidance import class_prototype
from diffexpand.sampling import sample

from .base import ExpansionMethod, document_inherited_settings
from .common import conditions, decode, initial_noise
from .denoising import DenoisingSettings
from .inputs import UsesFeatureExtractor, features_by_class, real_features
from .record import Batch, Generated, Record
from .registry import register_method


@register_method("real_filter")
@document_inherited_settings
@dataclass
class RealFilter(UsesFeatureExtractor, DenoisingSettings, ExpansionMethod):
    """Real-Filter: of `candidates` txt2img samples, keep the one closest to the class's real images.

    Args:
        num_inference_steps: denoising steps.
        guidance_scale: classifier-free guidance scale.
        negative_prompt: the unconditional prompt of classifier-free guidance.
        candidates: txt2img samples drawn per kept image.
        extractor: the feature extractor (a name or a dict of settings; see diffexpand.features):
            "timm" (EfficientNet-Lite0, ImageNet weights), "clip", "oracle", …
    """

    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    candidates: int = 4
    extractor: str | dict = "timm"

    def __post_init__(self):
        self.check_denoising_settings()
        if self.candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {self.candidates}")

    def plan(self, ctx, label, rng, index=0) -> dict:
        return {"prompt": ctx.plain_prompts[label], "candidates": self.candidates}

    def prepare(self, ws) -> dict:
        features, _ = real_features(ws, self.name, self.feature_extractor())
        return {"prototypes": {c: class_prototype(f) for c, f in features_by_class(ws, features).items()}}

    def inputs_for(self, record: Record, prepared: dict) -> dict[str, torch.Tensor]:
        return {"prototype": prepared["prototypes"][record.label]}

    @torch.no_grad()
    def candidate_images(self, parts, batch: Batch) -> torch.Tensor:
        """(candidates, n, 3, H, W): candidate j of every record, from its seed stream "candidate{j}"."""
        n, k = len(batch), self.candidates
        noise = torch.cat([initial_noise(parts, batch.records, f"candidate{j}") for j in range(k)])
        cond, uncond = conditions(parts, batch.values("prompt") * k, self.negative_prompt)
        schedule = self.schedule(parts, self.num_inference_steps)
        model_fn = self.guided_model_fn(parts, cond, uncond, self.guidance_scale, schedule)
        images = decode(parts, sample(model_fn, noise, schedule))
        return images.view(k, n, *images.shape[1:])

    @torch.no_grad()
    def similarities(self, images: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """Cosine similarity (k, n) of each candidate's features to its record's class prototype."""
        k, n = images.shape[:2]
        extractor = self.feature_extractor()
        features = normalized(extractor(images.flatten(0, 1).to(extractor.mean.device))).view(k, n, -1)
        return (features * normalized(prototypes).to(features.device)[None]).sum(-1)

    @torch.no_grad()
    def generate(self, parts, batch: Batch) -> Generated:
        candidates = self.candidate_images(parts, batch)
        similarity = self.similarities(candidates, batch.stack("prototype").float())
        best = similarity.argmax(0)
        scores = similarity.T.tolist()  # (n, candidates), one sync
        extras = [
            {"chosen_candidate": int(b), "similarity": s[int(b)], "candidate_scores": s}
            for b, s in zip(best.tolist(), scores, strict=True)
        ]
        rows = torch.arange(len(batch), device=candidates.device)
        return Generated(candidates[best.to(candidates.device), rows], extras)
