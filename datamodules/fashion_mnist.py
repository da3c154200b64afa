"""Fashion-MNIST as 32x32 RGB tensors in [-1, 1] with fine labels and captions (metaclass, fine class,
or metaclass plus measured attributes)."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from diffexpand.data.attributes import AttributeCaptioner, attribute_caption
from diffexpand.data.fashion_mnist import CLASS_NAMES, METACLASS_OF_CLASS, load_fashion_mnist, resize_uint8


class FashionMNISTTensors(Dataset):
    """In-memory images; each item is a dict with pixel_values (3, S, S) in [-1, 1], label, caption.

    With `attributes` (one tuple of words per image), the caption is built per draw: each word is kept
    with probability 1 − `attribute_dropout`, so the prior learns every word on its own and the plain
    metaclass caption stays in its training distribution."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        captions: list[str],
        hflip: bool = False,
        attributes: list[tuple[str, ...]] | None = None,
        attribute_dropout: float = 0.5,
    ):
        self.images, self.labels, self.captions, self.hflip = images, labels, captions, hflip
        self.attributes, self.attribute_dropout = attributes, attribute_dropout

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        x = self.images[i].float().div(127.5).sub(1).expand(3, -1, -1)
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        caption = self.captions[i]
        if self.attributes is not None and self.attributes[i]:
            words = self.attributes[i]
            keep = (torch.rand(len(words)) >= self.attribute_dropout).tolist()
            caption = attribute_caption("{}", caption, words, keep)
        return {"pixel_values": x, "label": int(self.labels[i]), "caption": caption}


def training_split_captioner(root: str | None, image_size: int) -> AttributeCaptioner:
    """The attribute captioner of the prior v2: thresholds from the whole training split at the size the
    prior trains on (deterministic, so an exported run records the thresholds it trained with)."""
    images, labels = load_fashion_mnist("train", root)
    return AttributeCaptioner.fit(resize_uint8(images, image_size), [METACLASS_OF_CLASS[y] for y in labels])


class FashionMNISTDataModule(L.LightningDataModule):
    """Train / test splits of Fashion-MNIST.

    `caption`: "metaclass" gives "a photo of a shoe" (what the prior v1 is pre-trained on), "class"
    gives "a photo of a Sneaker", "attributes" gives "a photo of a shoe, dark, patterned" with words
    measured from the image (diffexpand.data.attributes; what the prior v2 is trained on), each word
    dropped with probability `attribute_dropout` per draw. Validation uses a fixed slice of the *train*
    split so the test split stays untouched for classifier evaluation.
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
        attribute_dropout: float = 0.5,
    ):
        super().__init__()
        if caption not in {"metaclass", "class", "attributes"}:
            raise ValueError(f"caption must be 'metaclass', 'class' or 'attributes', got {caption!r}")
        if not 0.0 <= attribute_dropout <= 1.0:
            raise ValueError(f"attribute_dropout must be in [0, 1], got {attribute_dropout}")
        self.captioner: AttributeCaptioner | None = None
        self.save_hyperparameters()
        self.class_names = list(CLASS_NAMES)

    def _split(self, split: str, hflip: bool, sl: slice | None = None) -> FashionMNISTTensors:
        hp = self.hparams
        images, labels = load_fashion_mnist(split, hp.root)
        if sl is not None:
            images, labels = images[sl], labels[sl]
        words = CLASS_NAMES if hp.caption == "class" else METACLASS_OF_CLASS
        captions = [hp.prompt_template.format(words[y]) for y in labels]
        pixels = resize_uint8(images, hp.image_size)
        attributes = None
        if hp.caption == "attributes":
            metaclasses = [METACLASS_OF_CLASS[y] for y in labels]
            if self.captioner is None:  # measured once, for every split
                self.captioner = training_split_captioner(hp.root, hp.image_size)
            attributes = self.captioner.words(pixels, metaclasses)
        return FashionMNISTTensors(
            pixels, torch.as_tensor(labels), captions, hflip, attributes, hp.attribute_dropout
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
