# Importing the method files registers them by name.
from . import diffii, diffii_distdiff, distdiff, mix, real_filter, sdedit_family, txt2img  # noqa: F401
from .base import ExpansionMethod
from .common import PlanContext, sample_rng
from .diffii import DiffII
from .diffii_distdiff import DiffIIDistDiff
from .distdiff import DistDiff
from .inputs import RealImages, Workspace
from .mix import DiffMix, RealMix
from .real_filter import RealFilter
from .record import Batch, Generated, Record
from .registry import available_methods, create_method, method_class, register_method
from .sdedit_family import DAFusion, DiffAug, RealGuidance
from .txt2img import Txt2Img

__all__ = [
    "DAFusion",
    "DiffAug",
    "DiffII",
    "DiffIIDistDiff",
    "DiffMix",
    "DistDiff",
    "RealFilter",
    "RealGuidance",
    "RealMix",
    "Txt2Img",
    "Batch",
    "ExpansionMethod",
    "Generated",
    "PlanContext",
    "RealImages",
    "Record",
    "Workspace",
    "available_methods",
    "create_method",
    "method_class",
    "register_method",
    "sample_rng",
]
