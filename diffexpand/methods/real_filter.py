"""Real-Filter: txt2img, keeping only samples whose image features are close to the real images of
their class. Each record draws `candidates` txt2img samples from its own seed and keeps the one with
the highest cosine similarity to its class's real-feature mean (its prototype); every candidate's
score is recorded (`candidate_scores`). Candidates come from independent seed streams ("candidate0",
…) of the record's seed. A per-sample selection, so the result does not depend on batch size, world
size or resume points."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffexpand.features import build_extractor, normalized
from diffexpand.sampling import Schedule, cfg_model_fn, ddim_sample

from .base import ExpansionMethod, stack
from .common import conditions, decode, initial_noise
from .registry import register_method


@register_method("real_filter")
@dataclass
class RealFilter(ExpansionMethod):
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    candidates: int = 4  # txt2img samples drawn per kept image
    extractor: str | dict = "timm"  # see diffexpand.features; default EfficientNet-Lite0 (ImageNet)

    uses_real_features = True

    def __post_init__(self):
        if self.candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {self.candidates}")
        self.feature_extractor = None

    def load_extractor(self):
        if self.feature_extractor is None:
            self.feature_extractor = build_extractor(self.extractor).requires_grad_(False)
        return self.feature_extractor

    def plan(self, ctx, label, rng, index=0) -> dict:
        return {"prompt": ctx.plain_prompts[label], "candidates": self.candidates}

    @torch.no_grad()
    def candidate_images(self, parts, records: list[dict]) -> torch.Tensor:
        """(candidates, n, 3, H, W): candidate j of every record, from its seed stream "candidate{j}"."""
        n, k = len(records), self.candidates
        noise = torch.cat([initial_noise(parts, records, f"candidate{j}") for j in range(k)])
        cond, uncond = conditions(parts, [r["prompt"] for r in records] * k, self.negative_prompt)
        schedule = Schedule.from_scheduler(parts.scheduler, self.num_inference_steps)
        model_fn = cfg_model_fn(parts.unet, cond, uncond, self.guidance_scale)
        images = decode(parts, ddim_sample(model_fn, noise, schedule))
        return images.view(k, n, *images.shape[1:])

    @torch.no_grad()
    def similarities(self, images: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """Cosine similarity (k, n) of each candidate's features to its record's class prototype."""
        k, n = images.shape[:2]
        extractor = self.load_extractor()
        features = normalized(extractor(images.flatten(0, 1).to(extractor.mean.device))).view(k, n, -1)
        return (features * normalized(prototypes).to(features.device)[None]).sum(-1)

    @torch.no_grad()
    def generate(self, parts, records: list[dict]) -> torch.Tensor:
        candidates = self.candidate_images(parts, records)
        similarity = self.similarities(candidates, stack(records, "prototype", parts).float())
        best = similarity.argmax(0)
        scores = similarity.T.tolist()  # (n, candidates), one sync
        for i, record in enumerate(records):
            record["chosen_candidate"] = int(best[i])
            record["similarity"] = scores[i][int(best[i])]
            record["candidate_scores"] = scores[i]
        return candidates[best.to(candidates.device), torch.arange(len(records), device=candidates.device)]
