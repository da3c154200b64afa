"""DistDiff's hierarchical prototypes and distribution-aware energy guidance."""

from .energy import EnergyGuidance, prototype_energy, resolve_guidance_steps
from .prototypes import class_prototype, group_prototypes, hierarchical_prototypes

__all__ = [
    "EnergyGuidance",
    "class_prototype",
    "group_prototypes",
    "hierarchical_prototypes",
    "prototype_energy",
    "resolve_guidance_steps",
]
