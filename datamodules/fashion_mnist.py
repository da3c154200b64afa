"""Fashion-MNIST as 32x32 RGB tensors in [-1, 1] with fine labels and metaclass captions."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from diffexpand.data.fashion_mnist import CLASS_NAMES, METACLASS_OF_CLASS, load_fashion_mnist


def resize_uint8(images, size: int) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, 1, size, size) uint8, antialiased bilinear, in chunks to bound memory."""
    out = []
    for chunk in torch.from_numpy(np.array(images, copy=True)).split(8192):  # idx arrays are read-only
        x = chunk[:, None].float()
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


class FashionMNISTTensors(Dataset):
    """In-memory images; each item is a dict with pixel_values (3, S, S) in [-1, 1], label, caption."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, captions: list[str], hflip: bool = False):
        self.images, self.labels, self.captions, self.hflip = images, labels, captions, hflip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        x = self.images[i].float().div(127.5).sub(1).expand(3, -1, -1)
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return {"pixel_values": x, "label": int(self.labels[i]), "caption": self.captions[i]}


class FashionMNISTDataModule(L.LightningDataModule):
    """Train / test splits of Fashion-MNIST.

    `caption`: "metaclass" gives "a photo of a shoe" (what the prior is pre-trained on), "class"
    gives "a photo of a Sneaker". Validation uses a fixed slice of the *train* split so the test split
    stays untouched for classifier evaluation.
    """

    def __init__(
        self,
        root: str | None = None,
        image_size: int = 32,
        batch_size: int = 128,
        caption: str = "metaclass",
        prompt_template: str = "a photo of a {}",
        val_size: int = 1000,
        hflip: bool = True,
        num_workers: int = 0,
    ):
        super().__init__()
        if caption not in {"metaclass", "class"}:
            raise ValueError(f"caption must be 'metaclass' or 'class', got {caption!r}")
        self.save_hyperparameters()
        self.class_names = list(CLASS_NAMES)

    def _split(self, split: str, hflip: bool, sl: slice | None = None) -> FashionMNISTTensors:
        hp = self.hparams
        images, labels = load_fashion_mnist(split, hp.root)
        if sl is not None:
            images, labels = images[sl], labels[sl]
        words = METACLASS_OF_CLASS if hp.caption == "metaclass" else CLASS_NAMES
        captions = [hp.prompt_template.format(words[y]) for y in labels]
        return FashionMNISTTensors(
            resize_uint8(images, hp.image_size), torch.as_tensor(labels), captions, hflip
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and not hasattr(self, "train_set"):
            self.train_set = self._split("train", self.hparams.hflip)
            self.val_set = self._split("train", False, slice(0, self.hparams.val_size))
        if stage in (None, "test") and not hasattr(self, "test_set"):
            self.test_set = self._split("test", False)

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            dataset,
            batch_size=hp.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
