from . import txt2img  # noqa: F401  (registers the method)
from .registry import available_methods, create_method, register_method

__all__ = ["available_methods", "create_method", "register_method"]
