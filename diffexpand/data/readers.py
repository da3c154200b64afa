"""Readers for the on-disk formats users have, behind one small interface.

Each reader returns a `LabeledImages`: class names, one metaclass word per class (the word that stands
after the learned tokens in "a photo of a <class_3> bird"), labels, stable per-image ids, and a loader.
torchvision's dataset classes do the parsing where they read the format; downloads are only tried when
asked and, offline, end in a `DatasetNotFoundError` that says where the files must go.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .fashion_mnist import CLASS_NAMES as FASHION_CLASSES
from .fashion_mnist import METACLASS_OF_CLASS as FASHION_METACLASSES
from .fashion_mnist import DatasetNotFoundError, load_fashion_mnist
from .images import load_rgb

SPLITS = ("train", "test")


@dataclass
class LabeledImages:
    name: str
    class_names: list[str]
    metaclasses: list[str]  # one word per class
    labels: np.ndarray
    ids: list[str]  # stable per-image ids (relative paths, or "split/index")
    load: Callable[[int], Image.Image]
    extras: dict = field(default_factory=dict)  # per-image side information (e.g. Waterbirds place)
    files: list[Path] | None = None  # the image files, when the images are files (checked before use)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, what) the reader found wrong

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        return self.load(int(i))

    def take(self, indices) -> LabeledImages:
        """The images at `indices` as a dataset of their own (same classes; images load lazily)."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(
                f"{self.name}: indices must lie in [0, {len(self)}), got {indices.min()}…{indices.max()}"
            )
        extras = {k: np.asarray(v)[indices] for k, v in self.extras.items()}
        load = self.load
        return LabeledImages(
            self.name,
            self.class_names,
            self.metaclasses,
            self.labels[indices],
            [self.ids[int(j)] for j in indices],
            lambda i: load(int(indices[i])),
            extras,
            None if self.files is None else [self.files[int(j)] for j in indices],
        )


_READERS: dict[str, Callable[..., LabeledImages]] = {}


def register_reader(name: str):
    def decorate(fn):
        _READERS[name] = fn
        return fn

    return decorate


def available_datasets() -> list[str]:
    return sorted(_READERS)


def read_dataset(name: str, root: str | None, split: str, **kwargs) -> LabeledImages:
    if name not in _READERS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return _READERS[name](root, split, **kwargs)


def _require_root(name: str, root, how: str) -> Path:
    if root is None or not Path(root).expanduser().is_dir():
        raise DatasetNotFoundError(f"{name}: data root {root!r} (the `root` setting) does not exist. {how}")
    return Path(root).expanduser()


def _from_files(name, files, labels, classes, metaclass, root, problems=()) -> LabeledImages:
    files = [Path(f) for f in files]
    root = Path(root)
    ids = [str(f.relative_to(root)) if f.is_relative_to(root) else f.name for f in files]
    return LabeledImages(
        name,
        list(classes),
        [metaclass] * len(classes),
        np.asarray(labels, dtype=np.int64),
        ids,
        lambda i: load_rgb(files[i]),
        files=files,
        problems=list(problems),
    )


def _torchvision(name: str, cls_name: str, root, download: bool, how: str, **kwargs):
    """A torchvision dataset from `root`; a missing dataset becomes one clear error."""
    import torchvision.datasets as tvd

    root = Path(root or "data").expanduser()
    cls = getattr(tvd, cls_name)
    try:
        return cls(str(root), download=False, **kwargs)
    except (RuntimeError, FileNotFoundError) as missing:
        if not download:
            raise DatasetNotFoundError(f"{name} not found under {root} ({missing}). {how}") from missing
    try:
        return cls(str(root), download=True, **kwargs)
    except Exception as err:  # offline: any download failure ends in the same advice
        raise DatasetNotFoundError(
            f"{name} not found under {root} and the download failed ({err}). {how}"
        ) from err


@register_reader("fashion_mnist")
def fashion_mnist(root, split, **_) -> LabeledImages:
    images, labels = load_fashion_mnist(split, root)
    return LabeledImages(
        "fashion_mnist",
        list(FASHION_CLASSES),
        list(FASHION_METACLASSES),
        labels,
        [f"{split}/{i:05d}" for i in range(len(labels))],
        lambda i: Image.fromarray(images[i]).convert("RGB"),
    )


@register_reader("imagefolder")
def imagefolder(root, split, metaclass: str = "object", **_) -> LabeledImages:
    """`root/<split>/<class>/*.jpg` if `root/<split>` exists, else `root/<class>/*.jpg` (train only)."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    how = "Expected class folders: ROOT/train/<class>/*.jpg and ROOT/test/<class>/*.jpg (or ROOT/<class>/*)."
    base = _require_root("imagefolder", root, how)
    folder = base / split if (base / split).is_dir() else base
    if folder == base and split == "test":
        raise DatasetNotFoundError(f"imagefolder: no test split at {base / 'test'}. {how}")
    try:  # empty classes are collected, not raised: they are reported with the broken files
        ds = ImageFolder(str(folder), allow_empty=True)
    except FileNotFoundError as err:
        raise DatasetNotFoundError(f"imagefolder: {err}. {how}") from err
    found = {label for _, label in ds.samples}
    empty = [
        (f"{name}/", f"class folder holds no image file ({', '.join(IMG_EXTENSIONS)})")
        for label, name in enumerate(ds.classes)
        if label not in found
    ]
    files, labels = zip(*ds.samples, strict=True) if ds.samples else ((), ())
    return _from_files("imagefolder", files, labels, ds.classes, metaclass, folder, empty)


@register_reader("cub")
def cub(root, split, **_) -> LabeledImages:
    """CUB-200-2011 as distributed (images.txt, image_class_labels.txt, train_test_split.txt, classes.txt)."""
    how = "Download CUB_200_2011.tgz from the Caltech data site and extract it; pass the CUB_200_2011 folder."
    base = _require_root("CUB-200-2011", root, how)
    if (base / "CUB_200_2011").is_dir():
        base = base / "CUB_200_2011"
    needed = ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"]
    missing = [n for n in needed if not (base / n).is_file()]
    if missing:
        raise DatasetNotFoundError(f"CUB-200-2011: {base} lacks {', '.join(missing)}. {how}")

    def table(name):
        return dict(line.split(maxsplit=1) for line in (base / name).read_text().splitlines() if line.strip())

    paths, labels = table("images.txt"), table("image_class_labels.txt")
    is_train = table("train_test_split.txt")
    classes = [
        v.split(".", 1)[1].replace("_", " ")
        for _, v in sorted(table("classes.txt").items(), key=lambda kv: int(kv[0]))
    ]
    keep = sorted((k for k in paths if (is_train[k] == "1") == (split == "train")), key=int)
    files = [base / "images" / paths[k] for k in keep]
    return _from_files("cub", files, [int(labels[k]) - 1 for k in keep], classes, "bird", base / "images")


@register_reader("waterbirds")
def waterbirds(root, split, **_) -> LabeledImages:
    """Waterbirds (Sagawa et al.): metadata.csv with img_filename, y, split (0/1/2), place."""
    how = "Extract waterbird_complete95_forest2water2 and pass that folder (it holds metadata.csv)."
    base = _require_root("Waterbirds", root, how)
    if not (base / "metadata.csv").is_file():
        raise DatasetNotFoundError(f"Waterbirds: no metadata.csv in {base}. {how}")
    with (base / "metadata.csv").open() as fh:
        rows = [
            r for r in csv.DictReader(fh) if (r["split"] == "0") == (split == "train") and r["split"] != "1"
        ]
    files = [base / r["img_filename"] for r in rows]
    data = _from_files(
        "waterbirds", files, [int(r["y"]) for r in rows], ["landbird", "waterbird"], "bird", base
    )
    data.extras["place"] = np.asarray([int(r["place"]) for r in rows])
    return data


_TV_HOW = (
    "Put the dataset under ROOT in torchvision's layout (see torchvision.datasets.{cls}); "
    "downloads need internet."
)


def _tv_reader(name, cls_name, metaclass, split_names, files_attr, labels_attr, extra_kwargs=None):
    def read(root, split, download: bool = False, **_) -> LabeledImages:
        kwargs = {**(extra_kwargs or {}), "split": split_names[split]}
        ds = _torchvision(name, cls_name, root, download, _TV_HOW.format(cls=cls_name), **kwargs)
        files, labels = getattr(ds, files_attr), getattr(ds, labels_attr)
        return _from_files(name, files, labels, ds.classes, metaclass, getattr(ds, "root", root))

    register_reader(name)(read)
    return read


_tv_reader(
    "aircraft",
    "FGVCAircraft",
    "aircraft",
    {"train": "trainval", "test": "test"},
    "_image_files",
    "_labels",
    {"annotation_level": "variant"},
)
_tv_reader("pets", "OxfordIIITPet", "animal", {"train": "trainval", "test": "test"}, "_images", "_labels")
_tv_reader("flowers", "Flowers102", "flower", {"train": "train", "test": "test"}, "_image_files", "_labels")
_tv_reader("dtd", "DTD", "texture", {"train": "train", "test": "test"}, "_image_files", "_labels")


@register_reader("cars")
def cars(root, split, download: bool = False, **_) -> LabeledImages:
    ds = _torchvision("cars", "StanfordCars", root, download, _TV_HOW.format(cls="StanfordCars"), split=split)
    files, labels = zip(*ds._samples, strict=True)
    return _from_files("cars", files, labels, ds.classes, "car", root or "data")


@register_reader("caltech101")
def caltech101(root, split, download: bool = False, train_per_class: int = 30, **_) -> LabeledImages:
    """Caltech-101 has no official split: the usual 30 seeded images per class train, the rest test."""
    ds = _torchvision("caltech101", "Caltech101", root, download, _TV_HOW.format(cls="Caltech101"))
    labels = np.asarray(ds.y)
    rng = np.random.default_rng(0)
    train = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        train[rng.permutation(np.flatnonzero(labels == c))[:train_per_class]] = True
    keep = np.flatnonzero(train if split == "train" else ~train)
    base = Path(ds.root) / "101_ObjectCategories"
    files = [base / ds.categories[labels[i]] / f"image_{ds.index[i]:04d}.jpg" for i in keep]
    return _from_files("caltech101", files, labels[keep], ds.categories, "object", base)
