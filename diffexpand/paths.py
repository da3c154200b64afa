"""Fixed locations of the artifacts the repository ships."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRIOR = REPO_ROOT / "assets" / "tiny-fashion-prior"
DEFAULT_ORACLE = REPO_ROOT / "assets" / "fashion-oracle"
