"""Fashion-MNIST on disk: where to find it, its classes, and the coarse "metaclasses" of the prior.

The embedded prior is pre-trained on metaclass captions only ("a photo of a shoe"), so it knows the
coarse category but not the fine class (Sandal / Sneaker / Ankle boot) — the situation Stable
Diffusion is in with "bird" versus "Painted Bunting".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .idx import read_idx

# (fine class, its metaclass) in label order
_CLASSES = (
    ("T-shirt/top", "top"),
    ("Trouser", "trousers"),
    ("Pullover", "top"),
    ("Dress", "dress"),
    ("Coat", "top"),
    ("Sandal", "shoe"),
    ("Shirt", "top"),
    ("Sneaker", "shoe"),
    ("Bag", "bag"),
    ("Ankle boot", "shoe"),
)
CLASS_NAMES = tuple(name for name, _ in _CLASSES)
METACLASS_OF_CLASS = tuple(metaclass for _, metaclass in _CLASSES)
METACLASSES = ("top", "trousers", "dress", "shoe", "bag")
DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HOW_TO_GET = (
    "Fashion-MNIST was not found. Install it with `apt-get install dataset-fashion-mnist` "
    f"(files land in {DEBIAN_ROOT}), or put the four idx files (train-images-idx3-ubyte[.gz], …) in the "
    "folder given as `root`, or in `root/FashionMNIST/raw` (torchvision's layout)."
)


class DatasetNotFoundError(FileNotFoundError):
    pass


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_folders(root: str | Path | None) -> list[Path]:
    """Where we look, in order: the configured root, torchvision's layout under it, Debian's path."""
    folders = []
    if root is not None:
        root = Path(root).expanduser()
        folders += [root, root / "FashionMNIST" / "raw"]
    return folders + [DEBIAN_ROOT]


def find_fashion_mnist(root: str | Path | None = None, download: bool = True) -> Path:
    """The first folder holding all four idx files; tries torchvision's download as a last resort."""
    for folder in candidate_folders(root):
        if all(_find_file(folder, stem) for pair in _FILES.values() for stem in pair):
            return folder
    if download:
        root = Path(root) if root is not None else Path("data")
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)
            return find_fashion_mnist(root, download=False)
        except Exception as err:  # no internet here: any failure ends in the same advice
            raise DatasetNotFoundError(f"{HOW_TO_GET} (download attempt failed: {err})") from err
    raise DatasetNotFoundError(HOW_TO_GET)


def load_fashion_mnist(split: str, root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of the "train" or "test" split."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = find_fashion_mnist(root)
    image_stem, label_stem = _FILES[split]
    images = read_idx(_find_file(folder, image_stem))
    labels = read_idx(_find_file(folder, label_stem)).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels in the {split} split")
    return images, labels


def resize_uint8(images, size: int) -> torch.Tensor:
    """uint8 images (N, H, W) -> (N, 1, size, size), or (N, C, H, W) -> (N, C, size, size): antialiased
    bilinear, rounded back to uint8, in chunks to bound memory. The one resize path of the tiny world:
    the prior trains on it, and the set metrics bring real and synthetic images to one size with it."""
    x = torch.as_tensor(np.array(images, copy=True))  # idx arrays are read-only
    if x.dtype != torch.uint8:
        raise ValueError(f"resize_uint8 takes uint8 images, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"expected images (N, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    out = []
    for chunk in x.split(8192):
        chunk = chunk.float()
        if chunk.shape[-2:] != (size, size):
            chunk = F.interpolate(
                chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        out.append(chunk.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)
