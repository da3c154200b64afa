"""Diff-II suffixes: from the config, a file, a built-in preset, or generated from the real images."""

from .presets import SUFFIX_PRESETS, preset
from .sources import read_suffix_file, resolve_suffixes

__all__ = ["SUFFIX_PRESETS", "preset", "read_suffix_file", "resolve_suffixes"]
