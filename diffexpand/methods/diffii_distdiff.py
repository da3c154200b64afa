"""Diff-II + DistDiff: Diff-II's inversion slerp and two-stage denoising, kept inside the class's real
distribution by DistDiff's hierarchical prototype energy guidance.

Diff-II gets its diversity from moving along the great circle through two same-class inversions (with
λ over the whole turn, mostly extrapolation beyond them) and from the suffixed first stage; only the
concept prompt keeps an extrapolated latent in its class. DistDiff keeps samples near the class and
group prototypes of real-image features, but starts from one noised real image. Here each record is
planned, started and denoised exactly as Diff-II does (`DiffII`: concept prompts, the cached inversion
pool, λ drawn over `lambda_range`, the suffix stage), and at the guidance steps of that trajectory its
latent is guided as DistDiff guides (`PrototypeGuidance`: the residual transform, the energy averaged
over the P rollout steps' x̂0, with the two-stage prompt switch in the rollouts).

Guidance steps follow the official semantics on the full schedule, since Diff-II samples all of it from
the slerped latent (strength 1.0, start 0): M counts from the clean end, `timesteps[N − M : N − M + P]`.
The default M = 10 of 25 steps guides at t = 361 and 321, the noise level of DistDiff's official
t = 381, 361 (M = 20 of 50: the same share of the schedule). With `guidance: false` the images are
Diff-II's, exactly. Needs `trainer.inference_mode: false` (configs/expand/diffii_distdiff.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffexpand.sampling import Schedule

from .base import document_inherited_settings
from .diffii import DiffII
from .inputs import Workspace
from .prototype_guidance import PrototypeGuidance
from .record import Batch, Record
from .registry import register_method


@register_method("diffii_distdiff")
@document_inherited_settings
@dataclass
class DiffIIDistDiff(PrototypeGuidance, DiffII):
    """Diff-II + DistDiff: Diff-II's inversion slerp and two-stage denoising with prototype energy guidance.

    Args:
        guidance_steps: M, counted from the clean end of the full schedule (official; Diff-II samples
            all of it), a stage name ("chaos", "semantic", "refinement": middles of the schedule's
            thirds), or a list. Default 10 of 25 steps: t = 361, 321.
    """

    # Diff-II's settings (split_ratio, suffixes, lambda_range …), then the guidance ones (extractor,
    # groups, step_size …); only the default of M differs from DistDiff's, for a 25-step schedule
    guidance_steps: int | str | list = 10

    def __post_init__(self):
        super().__post_init__()  # Diff-II's checks and suffixes
        self.resolve_guidance(self.num_inference_steps, start=0)  # the whole schedule: strength 1.0

    def prepare(self, ws: Workspace) -> dict:
        return super().prepare(ws) | {"prototypes": self.prototypes(ws)}

    def inputs_for(self, record: Record, prepared: dict) -> dict[str, torch.Tensor]:
        return super().inputs_for(record, prepared) | self.prototype_inputs(record, prepared)

    def denoise(self, parts, model_fn, z: torch.Tensor, schedule: Schedule, batch: Batch):
        """Diff-II's denoising of the slerped latent, guided at the guidance steps."""
        return self.guided_sample(parts, model_fn, z, schedule, batch)
