from .components import SDComponents
from .loading import ModelNotAvailableError, load_sd_components
from .tiny import TinySDConfig, build_tiny_sd
from .tokenizer import build_clip_tokenizer, clean_prompt

__all__ = [
    "ModelNotAvailableError",
    "SDComponents",
    "TinySDConfig",
    "build_clip_tokenizer",
    "build_tiny_sd",
    "clean_prompt",
    "load_sd_components",
]
