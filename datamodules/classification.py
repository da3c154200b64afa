"""Real subset + synthetic sets for classifier training; the test or the validation split for evaluation.

`real`: init args of the real subset (dataset, root, subset, shots, seed …, as for the concept
learner, so both see the same images). `synthetic`: synthetic-set folders (metadata.jsonl + images).
`mixing: replace` swaps each real sample, with probability `p`, for a synthetic one of the same class,
drawn afresh each epoch from (seed, epoch, index); `mixing: concat` joins the sets; `mixing:
synthetic_only` replaces every real sample (p does not apply): no real image enters training.
A set's soft labels (Diff-Mix's) are the training targets of its images; `soft_labels: false` trains on
each image's class label alone instead (the ablation that tells a soft label's share of a gain).
`synthetic_filter: {kind: probe_agree}` keeps, of each set, the images that a linear probe fitted on the real
training images' pretrained features puts in their own class (`diffexpand.classification.set_filter`);
null (default) trains on every image. The share each set keeps is printed and logged.

`eval_split: test` (default) evaluates on the dataset's full test split; `eval_split: validation` on the
validation split carved from the training split (`diffexpand.data.subsets.validation_indices`:
`validation_per_class` images per class that no few-shot subset with seed < 10 and shots <= 50 selects),
where every setting is tuned so the test split is used once. Either split is read separately and never
enters training; a training subset that overlaps the validation split is refused.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import v2

from diffexpand.classification.mixing import MIXINGS, augmentation_seed, replacement, soft_target
from diffexpand.classification.set_filter import filter_indices, parse_filter_spec
from diffexpand.classification.synthetic import SyntheticSet
from diffexpand.data.folder_check import readable_subset
from diffexpand.data.images import checked_subset
from diffexpand.data.readers import LabeledImages, read_dataset
from diffexpand.data.subsets import (
    RESERVED_SEEDS,
    RESERVED_SHOTS,
    VALIDATION_PER_CLASS,
    validation_indices,
)
from diffexpand.typed_args import typed_kwargs

from .labeled import image_to_tensor


class EpochSampler(DistributedSampler):
    """Shuffled indices paired with the epoch, so the dataset's per-epoch draws change every epoch.
    A DistributedSampler (with the trainer's rank and world size) so Lightning keeps it, splits it
    across ranks and calls `set_epoch`."""

    def __iter__(self):
        return ((int(i), self.epoch) for i in super().__iter__())


class TrainSet(Dataset):
    """Items: pixel_values in [-1, 1], label, target (one-hot or soft), source ("real" or set index)."""

    def __init__(
        self,
        real: LabeledImages,
        indices,
        synthetic: list[SyntheticSet],
        mixing: str,
        p: float,
        seed: int,
        size: int,
        num_classes: int,
        augment: bool,
        soft_labels: bool = True,
    ):
        self.real, self.indices, self.synthetic = real, np.asarray(indices), synthetic
        self.soft_labels = soft_labels
        self.mixing, self.p, self.seed, self.size, self.num_classes = mixing, p, seed, size, num_classes
        # every synthetic image of a class, across sets: the replacement candidates
        self.candidates: dict[int, list[tuple[int, int]]] = {}
        for s, syn in enumerate(synthetic):
            for label, members in syn.by_class.items():
                self.candidates.setdefault(label, []).extend((s, i) for i in members)
        self.concat = (
            [(s, i) for s, syn in enumerate(synthetic) for i in range(len(syn))] if mixing == "concat" else []
        )
        if mixing == "synthetic_only":
            self._check_every_class_has_synthetic_images()
        self.augment = None
        if augment:
            crop = v2.RandomCrop(size, padding=size // 8, padding_mode="reflect")
            self.augment = v2.Compose([crop, v2.RandomHorizontalFlip()])

    def _check_every_class_has_synthetic_images(self) -> None:
        """Under synthetic_only a class with no synthetic image would have to keep its real ones."""
        classes = sorted({int(self.real.labels[j]) for j in self.indices})
        missing = [c for c in classes if not self.candidates.get(c)]
        if missing:
            raise ValueError(
                f"mixing synthetic_only: the synthetic sets have no image of class(es) {missing}, "
                "which would have to keep their real images; give sets that cover every class"
            )

    def __len__(self) -> int:
        return len(self.indices) + len(self.concat)

    def _synthetic_item(self, s: int, i: int) -> dict:
        syn, record = self.synthetic[s], self.synthetic[s].records[i]
        label = int(record["label"])
        soft = record.get("soft_label") if self.soft_labels else None
        target = soft_target(label, self.num_classes, soft)
        return {
            "pixel_values": image_to_tensor(syn.image(i), self.size),
            "label": label,
            "target": target,
            "source": s,
        }

    def __getitem__(self, item) -> dict:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        if index >= len(self.indices):
            out = self._synthetic_item(*self.concat[index - len(self.indices)])
        else:
            j = int(self.indices[index])
            label = int(self.real.labels[j])  # labels only: the image is read below if it is kept
            replacing = self.mixing in ("replace", "synthetic_only")
            pool = self.candidates.get(label, []) if replacing else []
            p = 1.0 if self.mixing == "synthetic_only" else self.p  # p = 1 always replaces (mixing.py)
            pick = replacement(self.seed, epoch, index, p, len(pool))
            if pick is not None:
                out = self._synthetic_item(*pool[pick])
            else:
                out = {
                    "pixel_values": image_to_tensor(self.real.image(j), self.size),
                    "label": label,
                    "target": soft_target(label, self.num_classes),
                    "source": -1,
                }
        if self.augment is not None:
            # torchvision draws from the global generator: seed a private copy of it for this item
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(augmentation_seed(self.seed, epoch, index))
                out["pixel_values"] = self.augment(out["pixel_values"])
        return out


class TestSet(Dataset):
    def __init__(self, data: LabeledImages, size: int):
        self.data, self.size = data, size
        place = data.extras.get("place")
        self.groups = None if place is None else 2 * np.asarray(data.labels) + np.asarray(place)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        item = {
            "pixel_values": image_to_tensor(self.data.image(i), self.size),
            "label": int(self.data.labels[i]),
        }
        if self.groups is not None:
            item["group"] = int(self.groups[i])
        return item


EVAL_SPLITS = ("test", "validation")
FILTER_BATCH = 64  # images decoded and embedded at a time by the synthetic-set filter


def refuse_sets_made_from(sets: list[SyntheticSet], held: set[str]) -> None:
    """Refuse a set any of whose records names an image of `held` (the validation split's ids) among its
    `source_ids`: a real set drawn around a smaller validation split, or an img2img set made from a
    subset that overlaps it, would train the classifier on what it is evaluated on."""
    for synthetic in sets:
        for i, record in enumerate(synthetic.records):
            sources = record.get("source_ids")
            hits = (
                [s for s in sources if isinstance(s, str) and s in held] if isinstance(sources, list) else []
            )
            if hits:
                line = synthetic.checked.lines[i]
                raise ValueError(
                    f"synthetic set {synthetic.folder}: metadata.jsonl line {line} was made from "
                    f"{hits[0]}, an image of the validation split the classifier is evaluated on; remake "
                    "the set from images outside it (a ceiling set: drawn with the same validation_per_class)"
                )


class ClassificationDataModule(L.LightningDataModule):
    def __init__(
        self,
        real: dict | None = None,
        synthetic: list[str] | None = None,
        mixing: str = "replace",
        p: float = 0.5,
        image_size: int = 32,
        batch_size: int = 32,
        augment: bool = True,
        soft_labels: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        eval_split: Literal["test", "validation"] = "test",
        validation_per_class: int = VALIDATION_PER_CLASS,
        synthetic_filter: dict | None = None,
    ):
        """`eval_split`: what the classifier is evaluated on — "test" (the dataset's test split) or
        "validation" (carved from the training split, `validation_per_class` images per class); the
        metrics are named after it (`test/acc` or `validation/acc`)."""
        super().__init__()
        if mixing not in MIXINGS:
            raise ValueError(f"mixing must be one of {MIXINGS}, got {mixing!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"replacement probability p must lie in [0, 1], got {p}")
        if not isinstance(soft_labels, bool):
            raise ValueError(f"soft_labels must be true or false, got {soft_labels!r}")
        if eval_split not in EVAL_SPLITS:
            raise ValueError(f"eval_split must be one of {EVAL_SPLITS}, got {eval_split!r}")
        if isinstance(validation_per_class, bool) or not isinstance(validation_per_class, int):
            raise ValueError(f"validation_per_class must be a whole number, got {validation_per_class!r}")
        if validation_per_class < 1:
            raise ValueError(f"validation_per_class must be >= 1, got {validation_per_class}")
        self.filter_spec = parse_filter_spec(synthetic_filter, "data.init_args.synthetic_filter")
        self.filter_kept: dict[str, tuple[int, int]] = {}  # set folder -> (images kept, images in it)
        self.save_hyperparameters()
        self._train_data = None
        self._validation = None  # the validation split's indices, once computed and checked

    @property
    def eval_split(self) -> str:
        return self.hparams.eval_split

    def _subset_args(self) -> dict:
        from datamodules.labeled import LabeledImageDataModule

        return typed_kwargs(LabeledImageDataModule, self.hparams.real or {}, "data.init_args.real")

    def _read(self) -> LabeledImages:
        if self._train_data is None:
            a = self._subset_args()
            data = read_dataset(a["dataset"], a["root"], "train", **(a["reader_args"] or {}))
            # the whole folder first (broken files outside the subset, empty classes), then the draw
            self._train_data = data
            subset = [a[k] for k in ("subset", "shots", "imbalance_factor", "seed", "max_count")]
            self.indices = readable_subset(
                data, *subset, a["on_bad_image"], "data.init_args.real.on_bad_image"
            )
            # every real training image is checked once, before training starts (not kept: "all" subsets)
            self.indices, _ = checked_subset(
                self._train_data,
                self.indices,
                a["on_bad_image"],
                "data.init_args.real.on_bad_image",
                keep=False,
            )
        return self._train_data

    @property
    def class_names(self) -> list[str]:
        return self._read().class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_counts(self) -> list[int]:
        """Real training images per class (the long-tail many/medium/few split uses these)."""
        labels = self._read().labels[self.indices]
        return np.bincount(labels, minlength=self.num_classes).tolist()

    def setup(self, stage: str | None = None) -> None:
        hp, data = self.hparams, self._read()
        if stage in (None, "fit"):
            synthetic = [SyntheticSet.read(f, self.num_classes) for f in hp.synthetic or []]
            if hp.eval_split == "validation":
                held = {data.ids[int(i)] for i in self._validation_indices()}
                refuse_sets_made_from(synthetic, held)
            if self.filter_spec is not None and synthetic:
                synthetic = self._filtered([str(f) for f in hp.synthetic], synthetic)
            self.train_set = TrainSet(
                data,
                self.indices,
                synthetic,
                hp.mixing,
                hp.p,
                hp.seed,
                hp.image_size,
                self.num_classes,
                hp.augment,
                hp.soft_labels,
            )
        if stage in (None, "fit", "validate", "test"):
            self.test_set = TestSet(self._eval_data(), hp.image_size)

    def _filtered(self, folders: list[str], sets: list[SyntheticSet]) -> list[SyntheticSet]:
        """Each set cut to the images the filter keeps, every image seen as the classifier sees it.
        Under DDP rank 0 decides and the others take its indices: ranks that kept different images
        would train on different pools (or, under concat, run different numbers of batches)."""
        trainer = self.trainer  # None when the module is used on its own
        device = "cpu" if trainer is None else trainer.strategy.root_device
        if trainer is None or trainer.world_size == 1:
            kept = self._filter_indices(sets, device)
        else:
            mine = self._filter_indices(sets, device) if trainer.is_global_zero else None
            kept = trainer.strategy.broadcast(mine, src=0)
        kind = self.filter_spec.kind
        for folder, syn, keep in zip(folders, sets, kept, strict=True):
            self.filter_kept[folder] = (len(keep), len(syn))  # keyed as the config names the set
            rank_zero_info(f"synthetic_filter {kind}: {folder} keeps {len(keep)} of {len(syn)} images")
        return [syn.subset(keep) for syn, keep in zip(sets, kept, strict=True)]

    def _filter_indices(self, sets: list[SyntheticSet], device) -> list[list[int]]:
        data, size, batch = self._train_data, self.hparams.image_size, FILTER_BATCH

        def batches(count: int, image_of):
            def each():
                for start in range(0, count, batch):
                    chunk = range(start, min(start + batch, count))
                    yield torch.stack([image_to_tensor(image_of(i), size) for i in chunk])

            return each

        real = batches(len(self.indices), lambda i: data.image(int(self.indices[i])))
        labels = torch.as_tensor(np.asarray(data.labels)[self.indices])
        per_set = [
            (batches(len(syn), syn.image), torch.tensor([r["label"] for r in syn.records])) for syn in sets
        ]
        return filter_indices(self.filter_spec, real, labels, per_set, self.num_classes, device)

    def _eval_data(self) -> LabeledImages:
        """The images the classifier is evaluated on: the test split, or the validation split."""
        hp, data, a = self.hparams, self._read(), self._subset_args()
        if hp.eval_split == "validation":
            return data.take(self._validation_indices())
        test = read_dataset(a["dataset"], a["root"], "test", **(a["reader_args"] or {}))
        if test.class_names != data.class_names:
            raise ValueError(f"{a['dataset']}: train and test splits name different classes")
        return test

    def _validation_indices(self):
        """The validation split's training-split indices, refused when the training subset overlaps it
        (the validation split is disjoint only from the few-shot subsets it reserves). Computed once: the
        set check and the evaluation data both need it."""
        if self._validation is not None:
            return self._validation
        data, a = self._read(), self._subset_args()
        try:
            chosen = validation_indices(data.labels, self.hparams.validation_per_class)
        except ValueError as err:
            raise ValueError(f"data.init_args.validation_per_class: {err}") from err
        shared = np.intersect1d(chosen, self.indices)
        if shared.size:
            raise ValueError(
                f"eval_split validation: the training subset (subset={a['subset']!r}, shots={a['shots']}, "
                f"seed={a['seed']}) holds {shared.size} image(s) of the validation split; it is disjoint "
                f"only from few-shot subsets with seed < {RESERVED_SEEDS} and shots <= {RESERVED_SHOTS}"
            )
        self._validation = chosen
        return chosen

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EpochSampler(
            self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.hparams.seed
        )
        return DataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            num_workers=self.hparams.num_workers,
            drop_last=False,
        )

    def _eval_loader(self) -> DataLoader:
        return DataLoader(
            self.test_set, batch_size=max(self.hparams.batch_size, 256), num_workers=self.hparams.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader()
