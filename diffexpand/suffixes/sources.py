"""Where Diff-II's suffixes come from: a list in the config, a text file, or a built-in preset."""

from __future__ import annotations

from pathlib import Path

from .presets import preset

MAX_SUFFIX_WORDS = 20  # a suffix is a short phrase; a long one would crowd out CLIP's 77 tokens


def read_suffix_file(path: str | Path) -> list[str]:
    """One suffix per line; blank lines and lines starting with '#' are ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"suffix_file {path} does not exist")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    suffixes = [line for line in lines if line and not line.startswith("#")]
    if not suffixes:
        raise ValueError(f"suffix_file {path} holds no suffix (one per line)")
    return suffixes


def resolve_suffixes(
    suffixes: list[str] | None = None, suffix_file: str | None = None, suffix_preset: str | None = None
) -> list[str]:
    """The suffix list from exactly one source (or none: no suffix)."""
    sources = {"suffixes": suffixes, "suffix_file": suffix_file, "suffix_preset": suffix_preset}
    given = [name for name, value in sources.items() if value]
    if len(given) > 1:
        raise ValueError(f"give one suffix source, not {' and '.join(given)}")
    if suffix_file:
        out = read_suffix_file(suffix_file)
    elif suffix_preset:
        out = preset(suffix_preset)
    else:
        out = [str(s).strip() for s in (suffixes or [])]
    for s in out:
        if not s or len(s.split()) > MAX_SUFFIX_WORDS:
            raise ValueError(f"a suffix must be 1 to {MAX_SUFFIX_WORDS} words, got {s!r}")
    return out
