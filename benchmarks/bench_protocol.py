"""The tiny benchmark's protocol: the rows it compares, the profiles it runs, the splits it evaluates
on, and the expansion settings every method config shares (read from configs/expand/base/data.yaml, so
the Real ×N ceiling adds as many images as a method does)."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
EXPANSION_DATA = REPO / "configs" / "expand" / "base" / "data.yaml"  # what every method config expands


def expansion_settings(path: Path = EXPANSION_DATA) -> tuple[float, int]:
    """(expansion ratio, image size) of the method configs' shared data settings."""
    init = (yaml.safe_load(path.read_text()) or {}).get("init_args", {})
    ratio, size = init.get("expansion_ratio"), (init.get("real") or {}).get("image_size")
    if not isinstance(ratio, int | float) or ratio <= 0 or not isinstance(size, int) or size < 1:
        raise ValueError(f"{path}: expected init_args.expansion_ratio > 0 and init_args.real.image_size, "
                         f"got {ratio!r} and {size!r}")  # fmt: skip
    return float(ratio), size


EXPANSION_RATIO, IMAGE_SIZE = expansion_settings()
CLASSIFIER_CONFIG = REPO / "configs" / "classifier.yaml"
CONCEPT_CONFIG = REPO / "configs" / "concept.yaml"  # how the benchmark learns each subset's concepts


def method_config(method: str) -> Path:
    """The config an expansion method's sets are made by (configs/expand/<method>.yaml)."""
    return REPO / "configs" / "expand" / f"{method}.yaml"


def model_section(config: Path) -> tuple[dict, dict]:
    """A config's `model` section and that section's `init_args`, read as YAML (each empty where absent)."""
    model = (yaml.safe_load(config.read_text()) or {}).get("model") or {}
    return model, model.get("init_args") or {}


def uses_concepts(config: Path) -> bool:
    """Whether a method config takes a concept folder (model.init_args.concepts; the benchmark then passes
    the subset's), read as YAML: a comment that mentions concepts does not count."""
    return "concepts" in model_section(config)[1]


def classifier_config_seed(path: Path = CLASSIFIER_CONFIG) -> int:
    """The classifier config's seed_everything: the seed of a run given no other."""
    seed = (yaml.safe_load(path.read_text()) or {}).get("seed_everything")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"{path}: expected an integer seed_everything, got {seed!r}")
    return seed


CEILING = f"Real ×{EXPANSION_RATIO:g}"  # other real images, as many as a method adds
CEILING_METHOD = "real"  # its set folder: sets/real-<shots>shot-seed<seed>
# Every row, the ceiling included, goes through the classifier the same way: real samples replaced by
# the row's images with configs/classifier.yaml's p, for the same number of optimizer steps. The rows then
# differ in their images alone, and a row's share of the ceiling's gain compares like with like. (Adding a
# set instead, as DistDiff's paper does, makes an epoch six times longer: a concatenated row would be
# measured against an Original that trained a sixth as long.)
MIXING = "replace"
ROWS = {  # row label -> the expansion method that makes its set (None: real images only)
    "Original": None,
    CEILING: CEILING_METHOD,
    "txt2img": "txt2img",
    "Real-Guidance": "real_guidance",
    "DA-Fusion": "dafusion",
    "Diff-AUG": "diffaug",
    "Diff-Mix": "diffmix",
    "Diff-II": "diffii",
    "DistDiff": "distdiff",
    # a Diff-II set with guidance: its paired difference to Diff-II is the guidance
    "Diff-II+DistDiff": "diffii_distdiff",
}
SYNTHETIC_ONLY = "synthetic_only"  # the classifier's mixing that trains on a set alone
# The synthetic-only column costs one more classifier run per row and seed: full profile only, which
# keeps `make demo` within its 15 minutes on 2 cores.
PROFILES = {
    "quick": {
        "shots": [5],
        "seeds": [0],
        "rows": ["Original", CEILING, "txt2img", "Diff-II", "DistDiff", "Diff-II+DistDiff"],
        "curve": False,
        "synthetic_only": False,
    },
    "full": {"shots": [5, 10], "seeds": [0, 1, 2], "rows": list(ROWS), "curve": True, "synthetic_only": True},
}
SPLITS = ("test", "validation")
SPLIT_RATIOS = [0.0, 0.1, 0.3, 0.5, 0.7, 1.0]


def say(message: str) -> None:
    """One progress line of the benchmark's log, with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
