# Importing the method files registers them by name.
from . import diffii, distdiff, mix, real_filter, sdedit_family, txt2img  # noqa: F401
from .base import ExpansionMethod
from .common import PlanContext, sample_rng
from .registry import available_methods, create_method, register_method

__all__ = [
    "ExpansionMethod",
    "PlanContext",
    "available_methods",
    "create_method",
    "register_method",
    "sample_rng",
]
