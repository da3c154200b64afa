"""A labelled image dataset cut to the experiment's subset (few-shot, long-tail or all)."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import numpy as np
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from diffexpand.data.folder_check import readable_subset
from diffexpand.data.images import check_bad_image_choice, checked_subset, image_to_tensor
from diffexpand.data.readers import LabeledImages, read_dataset
from diffexpand.data.subsets import step_batch_indices


class SubsetImages(Dataset):
    """Items are dicts (pixel_values, label, id); an index may come with a flip bit: (index, flip)."""

    def __init__(self, data: LabeledImages, indices: np.ndarray, size: int, decoded: dict | None = None):
        """`decoded`: {dataset index: PIL image} already read (by the bad-image check)."""
        self.data, self.indices, self.size = data, np.asarray(indices), size
        # few-shot sets are small: decode each image once
        self._cache = {j: image_to_tensor(image, size) for j, image in (decoded or {}).items()}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item) -> dict:
        i, flip = item if isinstance(item, tuple) else (item, False)
        j = int(self.indices[i])
        if j not in self._cache:
            self._cache[j] = image_to_tensor(self.data.image(j), self.size)
        x = self._cache[j]
        x = x.flip(-1) if flip else x
        return {"pixel_values": x, "label": int(self.data.labels[j]), "id": self.data.ids[j]}


class StepBatchSampler(BatchSampler):
    """Batches for training steps start..end-1, each a pure function of (seed, step): a resumed run
    sees exactly the batches the uninterrupted one would have.

    Under DDP Lightning re-creates this sampler with a `DistributedSampler` as `sampler`; each rank then
    takes its slice of the step's global batch (batch_size x world size), so ranks never overlap.

    `start_step` may be a function returning the trainer's live global step. Then the sampler is one
    epoch of `end_step` batches of which Lightning, restored from a mid-run checkpoint, has done
    `start_step()`: iteration starts there and the epoch ends exactly at end_step. (With a fixed length
    of end - start the restored loop would end the epoch early and iterate again from the start.)
    """

    def __init__(
        self,
        sampler,
        batch_size: int,
        seed: int,
        start_step: int | Callable[[], int],
        end_step: int,
        hflip: bool = True,
    ):
        super().__init__(sampler, batch_size, drop_last=True)
        self.num_items = len(getattr(sampler, "dataset", sampler))
        self.rank, self.world = getattr(sampler, "rank", 0), getattr(sampler, "num_replicas", 1)
        self.seed, self.start_step, self.end_step, self.hflip = seed, start_step, end_step, hflip

    def __len__(self) -> int:
        return self.end_step if callable(self.start_step) else max(0, self.end_step - self.start_step)

    def __iter__(self):
        b = self.batch_size
        start = self.start_step() if callable(self.start_step) else self.start_step
        for step in range(start, self.end_step):
            idx = step_batch_indices(self.num_items, b * self.world, step, self.seed)
            flips = np.random.default_rng([self.seed, step, 1]).random(len(idx)) < 0.5
            mine = slice(self.rank * b, (self.rank + 1) * b)
            yield [(int(i), bool(f and self.hflip)) for i, f in zip(idx[mine], flips[mine], strict=True)]


class LabeledImageDataModule(L.LightningDataModule):
    def __init__(
        self,
        dataset: str = "fashion_mnist",
        root: str | None = None,
        subset: str = "few_shot",
        shots: int = 5,
        imbalance_factor: float = 100.0,
        max_count: int | None = None,
        seed: int = 0,
        image_size: int = 32,
        batch_size: int = 8,
        hflip: bool = True,
        num_workers: int = 0,
        reader_args: dict | None = None,
        on_bad_image: str = "error",
    ):
        """`on_bad_image`: a subset image that cannot be read stops the run with a list of every such
        file ("error"), or is left out with the same list as a warning ("skip")."""
        super().__init__()
        check_bad_image_choice(on_bad_image)  # before any image is read
        self.save_hyperparameters()
        self.train_data: LabeledImages | None = None

    def prepare_data(self) -> None:
        self._read()

    def _read(self) -> LabeledImages:
        if self.train_data is None:
            hp = self.hparams
            data = read_dataset(hp.dataset, hp.root, "train", **(hp.reader_args or {}))
            # the whole folder is checked before the draw: a broken file outside the subset, or an empty
            # class, is reported now, with everything else that is wrong
            self.indices = readable_subset(
                data,
                hp.subset,
                hp.shots,
                hp.imbalance_factor,
                hp.seed,
                hp.max_count,
                hp.on_bad_image,
                "on_bad_image",
            )
            self.train_data = data
        return self.train_data

    @property
    def class_names(self) -> list[str]:
        return self._read().class_names

    @property
    def metaclasses(self) -> list[str]:
        return self._read().metaclasses

    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "train_set"):
            data = self._read()
            self.indices, decoded = checked_subset(
                data, self.indices, self.hparams.on_bad_image, "on_bad_image"
            )
            self.train_set = SubsetImages(data, self.indices, self.hparams.image_size, decoded)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        trainer = self.trainer
        end = trainer.max_steps if trainer is not None and trainer.max_steps > 0 else None
        if end is None:
            raise ValueError("LabeledImageDataModule trains by steps: set trainer.max_steps")
        sampler = StepBatchSampler(
            SequentialSampler(self.train_set),
            hp.batch_size,
            hp.seed,
            lambda: trainer.global_step,
            end,
            hp.hflip,
        )
        return DataLoader(self.train_set, batch_sampler=sampler, num_workers=hp.num_workers)
