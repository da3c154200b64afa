"""The whole dataset checked once, before a subset is drawn from it.

Decoding every image of a large folder would take minutes, so each file gets PIL's cheap `verify`
(format header; for PNG every chunk checksum, so truncation shows). A JPEG passes `verify` even when
cut short; one whose last bytes lack the end-of-image marker is therefore decoded in full. What the
drawn subset uses is decoded completely afterwards anyway (`images.checked_subset`).

Every problem is reported in one message: broken files and folder-level faults the reader found (an
empty class folder) together, so fixing one does not merely reveal the next.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from diffexpand.progress import progress_wanted

from .images import BadImageError, check_bad_image_choice, load_rgb, reason_of
from .subsets import select_subset

JPEG_END = b"\xff\xd9"
JPEG_TAIL_BYTES = 1024  # some writers pad after the end marker; look for it in the last KiB


def _jpeg_looks_cut(path: Path, image: Image.Image) -> bool:
    if image.format != "JPEG":
        return False
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - JPEG_TAIL_BYTES))
        return JPEG_END not in fh.read()


def file_problem(path: str | Path) -> str | None:
    """Why `path` cannot be used as an image, or None when it can."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.verify()
                cut = _jpeg_looks_cut(path, image)
        if cut:
            load_rgb(path)  # decode it all: raises if it really is truncated
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return "file not found" if isinstance(err, FileNotFoundError) else reason_of(err)
    return None


def _show_progress(total: int) -> bool:
    return total >= 2000 and progress_wanted()  # a small folder is checked in a blink


def usable_indices(data, on_bad_image: str = "error", setting: str = "on_bad_image") -> np.ndarray:
    """Indices of `data` (a LabeledImages) whose files pass the check. Problems stop the run with one
    error listing all of them; with on_bad_image='skip', broken files are left out (listed in a
    warning) — but a folder-level problem such as an empty class always stops it."""
    check_bad_image_choice(on_bad_image, setting)
    files = getattr(data, "files", None)
    problems = list(getattr(data, "problems", []))
    if files is None:  # images held in memory (e.g. Fashion-MNIST from its IDX files): nothing to open
        if problems:
            raise BadImageError(problems)
        return np.arange(len(data))
    bad, ok = [], np.ones(len(files), dtype=bool)
    for i, path in enumerate(
        tqdm(files, desc="checking images", unit="file", disable=not _show_progress(len(files)))
    ):
        reason = file_problem(path)
        if reason is not None:
            bad.append((data.ids[i], reason))
            ok[i] = False
    if problems or (bad and on_bad_image == "error"):
        hint = (
            ""
            if not bad or on_bad_image == "skip"
            else f"\nFix or remove them, or set {setting}: skip to leave them out."
        )
        raise BadImageError(problems + bad, hint)
    if bad:
        listing = "\n".join(f"  {name}: {reason}" for name, reason in bad)
        warnings.warn(f"left out {len(bad)} image(s) that cannot be read:\n{listing}", stacklevel=2)
    return np.flatnonzero(ok)


def readable_subset(
    data, subset, shots, imbalance_factor, seed, max_count, on_bad_image, setting
) -> np.ndarray:
    """The experiment's subset of `data` (`subsets.select_subset`), drawn after the whole folder passed
    `usable_indices`: from the readable files only, as indices into `data`."""
    usable = usable_indices(data, on_bad_image, setting)
    return usable[select_subset(data.labels[usable], subset, shots, imbalance_factor, seed, max_count)]
