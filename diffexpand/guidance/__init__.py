"""DistDiff's hierarchical prototypes and distribution-aware energy guidance."""

from .energy import EnergyGuidance, prototype_energy
from .prototypes import class_prototype, group_prototypes, hierarchical_prototypes
from .timing import STAGES, resolve_guidance_steps

__all__ = [
    "STAGES",
    "EnergyGuidance",
    "class_prototype",
    "group_prototypes",
    "hierarchical_prototypes",
    "prototype_energy",
    "resolve_guidance_steps",
]
