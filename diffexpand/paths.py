"""Fixed locations of the artifacts the repository ships."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRIOR = REPO_ROOT / "assets" / "tiny-fashion-prior-v3"
DEFAULT_ORACLE = REPO_ROOT / "assets" / "fashion-oracle"


def paper_preset(method: str) -> Path | None:
    """The overlay with a method's papers' solver and steps (configs/expand/paper/), when it has one."""
    path = REPO_ROOT / "configs" / "expand" / "paper" / f"{method}.yaml"
    return path if path.is_file() else None


def portable(path: str | Path) -> str:
    """A path inside the repository as repository-relative ("assets/tiny-fashion-prior-v3"), so files
    that record it (concepts.json) stay valid in another clone; anything else unchanged."""
    p = Path(path)
    if p.is_absolute() and p.resolve().is_relative_to(REPO_ROOT):
        return str(p.resolve().relative_to(REPO_ROOT))
    return str(path)


def in_repo(path: str | Path) -> Path | None:
    """The repository folder a relative path names, when it exists and the path does not from here."""
    p = Path(path)
    if not p.is_absolute() and not p.exists() and (REPO_ROOT / p).exists():
        return REPO_ROOT / p
    return None
