"""The captioner of the tiny prior v2: within-class attributes measured from each image.

Stable Diffusion knows "red", "striped" or "long-sleeved" because its captions say so. The tiny prior
learns the same kind of words from captions built here: the metaclass word plus attribute words measured
from the pixels — never the fine class name. Three attributes, each measured on the 32x32 grayscale
image the prior trains on (foreground = pixels >= FOREGROUND, Fashion-MNIST's background is 0):

- tone: mean foreground intensity -> "dark" / "light";
- texture: mean absolute difference of adjacent foreground pixels -> "plain" / "patterned";
- width: foreground bounding-box width / height -> "narrow" / "wide".

The words are relative to the metaclass: an image gets "dark" when its tone lies in the lowest third of
its metaclass on the training split, "light" in the highest third, no tone word in the middle third
(`AttributeCaptioner.fit` measures the thirds). So "a photo of a top, dark" means darker than most tops.
How well each word separates images, and how the words relate to the fine classes, is in the prior's
model card (`tools/evaluate_prior.py` measures both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FOREGROUND = 32  # uint8 level; Fashion-MNIST backgrounds are 0, garment pixels mostly > 60
# attribute -> (word for the lowest third, word for the highest third)
ATTRIBUTE_WORDS: dict[str, tuple[str, str]] = {
    "tone": ("dark", "light"),
    "texture": ("plain", "patterned"),
    "width": ("narrow", "wide"),
}
ATTRIBUTES = tuple(ATTRIBUTE_WORDS)
CAPTIONER_FILE = "captioner.json"


def measure_attributes(images) -> dict[str, np.ndarray]:
    """Per-image tone, texture and width of grayscale uint8 images (N, H, W) or (N, 1, H, W)."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"expected grayscale images (N, 1, H, W), got shape {x.shape}")
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"expected images (N, H, W), got shape {x.shape}")
    fg = x >= FOREGROUND
    area = fg.sum((1, 2))
    tone = (x * fg).sum((1, 2)) / np.maximum(area, 1)
    pairs_h = fg[:, :, 1:] & fg[:, :, :-1]
    pairs_v = fg[:, 1:, :] & fg[:, :-1, :]
    diff = (np.abs(np.diff(x, axis=2)) * pairs_h).sum((1, 2)) + (np.abs(np.diff(x, axis=1)) * pairs_v).sum(
        (1, 2)
    )
    texture = diff / np.maximum(pairs_h.sum((1, 2)) + pairs_v.sum((1, 2)), 1)
    width = fg.any(1).sum(1) / np.maximum(fg.any(2).sum(1), 1)
    return {"tone": tone, "texture": texture, "width": width}


def images_to_gray_uint8(images) -> np.ndarray:
    """Generated images in [-1, 1] (N, 3, H, W) (torch or numpy) -> grayscale uint8 (N, H, W), the
    form `measure_attributes` takes."""
    x = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=np.float32)
    gray = x.mean(1) if x.ndim == 4 else x
    return np.clip(np.round((gray + 1) * 127.5), 0, 255).astype(np.uint8)


@dataclass
class AttributeCaptioner:
    """Thirds of each attribute per metaclass, measured on the training split; turns images into words."""

    # metaclass -> attribute -> (lower third boundary, upper third boundary)
    thresholds: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    @classmethod
    def fit(cls, images, metaclasses: list[str]) -> AttributeCaptioner:
        values = measure_attributes(images)
        metaclasses = np.asarray(metaclasses)
        thresholds = {}
        for meta in sorted(set(metaclasses.tolist())):
            sel = metaclasses == meta
            thresholds[meta] = {
                name: tuple(float(q) for q in np.quantile(values[name][sel], [1 / 3, 2 / 3]))
                for name in ATTRIBUTES
            }
        return cls(thresholds)

    def words(self, images, metaclasses: list[str]) -> list[tuple[str, ...]]:
        """The attribute words of each image, in the order of ATTRIBUTES (middle thirds give none)."""
        values = measure_attributes(images)
        out = []
        for i, meta in enumerate(metaclasses):
            if meta not in self.thresholds:
                raise ValueError(
                    f"no attribute thresholds for metaclass {meta!r}; known: {sorted(self.thresholds)}"
                )
            words = []
            for name in ATTRIBUTES:
                low, high = self.thresholds[meta][name]
                value = values[name][i]
                if value < low:
                    words.append(ATTRIBUTE_WORDS[name][0])
                elif value > high:
                    words.append(ATTRIBUTE_WORDS[name][1])
            out.append(tuple(words))
        return out

    def to_json(self) -> dict:
        return {
            "foreground_level": FOREGROUND,
            "attribute_words": {name: list(words) for name, words in ATTRIBUTE_WORDS.items()},
            "thresholds": {m: {a: list(t) for a, t in v.items()} for m, v in self.thresholds.items()},
        }

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CAPTIONER_FILE
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> AttributeCaptioner:
        path = Path(folder) / CAPTIONER_FILE
        try:
            data = json.loads(path.read_text())
            thresholds = {
                str(m): {a: (float(t[0]), float(t[1])) for a, t in v.items()}
                for m, v in data["thresholds"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
            raise ValueError(f"{path}: not a readable attribute captioner file ({err})") from err
        for meta, v in thresholds.items():
            if set(v) != set(ATTRIBUTES):
                raise ValueError(
                    f"{path}: metaclass {meta!r} has attributes {sorted(v)}, expected {list(ATTRIBUTES)}"
                )
        return cls(thresholds)


def attribute_caption(template: str, metaclass: str, words, keep=None) -> str:
    """ "a photo of a top, dark, patterned": the metaclass caption, then the kept attribute words, each
    after a comma (the form a Diff-II suffix appends). `keep`: one bool per word (all when None)."""
    kept = [w for w, k in zip(words, keep if keep is not None else [True] * len(words), strict=True) if k]
    return template.format(metaclass) + "".join(f", {w}" for w in kept)
