"""Image files as users have them, turned into RGB — or into one clear list of what is broken.

Convertible images become 8-bit RGB: grayscale and bilevel, palette (with or without transparency),
RGBA / LA (composited on white, so a transparent background does not turn black), CMYK, 16- and 32-bit
integer and float images (rescaled to their real range, not clipped), tiny and large images. An image
is decoded completely before it is used, so a truncated file fails here, never half-way into a batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey bottom half


class BadImageError(ValueError):
    """Images that cannot be read; `bad` lists (id, reason) for every one of them."""

    def __init__(self, bad: list[tuple[str, str]], hint: str = ""):
        self.bad = bad
        folders = sum(name.endswith("/") for name, _ in bad)  # folder-level problems (an empty class)
        what = (
            f"{len(bad)} image(s) cannot be read" if not folders else f"{len(bad)} problem(s) with the images"
        )
        super().__init__(f"{what}:\n{_listing(bad)}{hint}")


def _listing(bad: list[tuple[str, str]]) -> str:
    return "\n".join(f"  {name}: {reason}" for name, reason in bad)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB (see the module docstring for what happens to each mode)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
        if mode == "F":
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
            values, top = values - low, max(high - low, 1e-12)
        gray = np.clip(np.nan_to_num(values) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def image_to_tensor(image: Image.Image, size: int):
    """PIL RGB -> (3, size, size) float tensor in [-1, 1]: shorter side to `size` (bicubic,
    antialiased), centre crop. How every stage sees a real image: expansion, classifier, ceiling sets."""
    from torchvision.transforms import functional as TF  # torch only where tensors are made

    image = TF.resize(image, size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    image = TF.center_crop(image, size)
    return TF.to_tensor(image).mul(2).sub(1).clamp(-1, 1)


def load_rgb(path: str | Path) -> Image.Image:
    """Open, fully decode and convert one file; raises OSError / ValueError with the reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # large photos are fine
        with Image.open(path) as image:
            image.load()  # decode everything now: truncation surfaces here
            if image.width < 1 or image.height < 1:
                raise ValueError(f"empty image ({image.width}x{image.height})")
            return to_rgb(image).copy()


def reason_of(err: Exception) -> str:
    if isinstance(err, Image.DecompressionBombError):
        return f"too large to decode safely ({err})"
    if isinstance(err, Image.UnidentifiedImageError):
        return "not an image PIL can identify (wrong extension, or not an image file)"
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def decode_all(
    ids: Iterable[str], load: Callable[[int], Image.Image], indices: Iterable[int], keep: bool = True
) -> tuple[dict[int, Image.Image | None], list[tuple[str, str]]]:
    """Decode every listed image once: ({index: RGB image, or None unless `keep`}, [(id, reason) of
    each broken one])."""
    ids = list(ids)
    good, bad = {}, []
    for i in indices:
        try:
            image = load(int(i))
            good[int(i)] = image if keep else None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            bad.append((ids[int(i)], reason_of(err)))
    return good, bad


BAD_IMAGE_CHOICES = ("error", "skip")


def check_bad_image_choice(on_bad_image: str, setting: str = "on_bad_image") -> None:
    if on_bad_image not in BAD_IMAGE_CHOICES:
        raise ValueError(f"{setting} must be one of {BAD_IMAGE_CHOICES}, got {on_bad_image!r}")


def checked_subset(data, indices, on_bad_image: str = "error", setting: str = "on_bad_image", keep=True):
    """Decode the subset's images once, before any heavy work. Broken files stop the run with one
    error listing all of them; with on_bad_image='skip' they are left out and listed in a warning.
    Returns (kept indices, {index: RGB image})."""
    check_bad_image_choice(on_bad_image, setting)
    good, bad = decode_all(data.ids, data.load, indices, keep)
    if bad and on_bad_image == "error":
        raise BadImageError(bad, f"\nFix or remove them, or set {setting}: skip to leave them out.")
    if bad:
        warnings.warn(f"left out {len(bad)} image(s) that cannot be read:\n{_listing(bad)}", stacklevel=2)
    kept = np.asarray([int(i) for i in indices if int(i) in good], dtype=np.int64)
    return kept, good
