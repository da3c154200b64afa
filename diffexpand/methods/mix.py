"""Inter-class SDEdit with soft labels: an image of class a, edited toward class b's prompt.

- realmix: class-name prompts on the plain model.
- diffmix (Wang et al. 2024): learned tokens + LoRA.
Soft label: y[a] += 1 − s^γ, y[b] += s^γ with γ = 0.8 (Diff-Mix's annealed label); the hard label is
class b. Sources: a random other class, then a random real image of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import document_inherited_settings, pick_source
from .registry import register_method
from .sdedit_family import SDEditMethod


def mix_soft_label(num_classes: int, source: int, target: int, strength: float, gamma: float) -> list[float]:
    y = [0.0] * num_classes
    y[source] += 1.0 - strength**gamma
    y[target] += strength**gamma
    return y


@document_inherited_settings
@dataclass
class MixMethod(SDEditMethod):
    """SDEdit of a real image of another class toward this class's prompt, with a soft label.

    Args:
        strengths: SDEdit strengths; each record draws one.
        gamma: soft-label exponent γ: the target class gets s^γ, the source class 1 − s^γ.
    """

    strengths: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.9])
    gamma: float = 0.8

    def plan(self, ctx, label, rng, index=0) -> dict:
        if ctx.num_classes < 2:
            raise ValueError(f"{self.name} mixes two classes; the dataset has one")
        # `label` is the target class; the source image comes from any other class.
        others = [c for c in range(ctx.num_classes) if c != label]
        source = others[int(rng.integers(len(others)))]
        strength = float(self.strengths[int(rng.integers(len(self.strengths)))])
        return {
            "source_ids": [pick_source(ctx, source, rng)],
            "source_label": source,
            "strength": strength,
            "prompt": self.prompts(ctx)[label],
            "soft_label": mix_soft_label(ctx.num_classes, source, label, strength, self.gamma),
        }


@register_method("realmix")
@document_inherited_settings
@dataclass
class RealMix(MixMethod):
    """Real-Mix: inter-class SDEdit with class-name prompts on the plain model."""


@register_method("diffmix")
@document_inherited_settings
@dataclass
class DiffMix(MixMethod):
    """Diff-Mix (Wang et al. 2024): inter-class SDEdit with learned tokens and the shared LoRA."""

    uses_concepts = True
