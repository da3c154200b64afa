"""Plans every synthetic image as a record and serves the records to the predict loop."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from diffexpand.manifest import read_manifest
from diffexpand.seeding import sample_seed


class RecordDataset(Dataset):
    """A sized list of records, so Lightning's distributed predict sampler splits it without padding."""

    def __init__(self, records: list[dict]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.records[i]


def collate_records(records: list[dict]) -> list[dict]:
    return list(records)


class ExpansionDataModule(L.LightningDataModule):
    """One record per synthetic image: stable `sample_id`, label, class name, seed, prompt.

    Records already listed in `output_dir`'s manifest are dropped, so a rerun finishes what is missing.
    """

    def __init__(
        self,
        class_names: list[str],
        images_per_class: int = 5,
        prompt_template: str = "a photo of a {}",
        seed: int = 0,
        batch_size: int = 8,
        output_dir: str | None = None,
    ):
        super().__init__()
        if not class_names:
            raise ValueError("class_names is empty: give at least one class to expand")
        if images_per_class < 1:
            raise ValueError(f"images_per_class must be >= 1, got {images_per_class}")
        self.save_hyperparameters()
        self.class_names = list(class_names)

    def plan(self) -> list[dict]:
        hp = self.hparams
        records = []
        for label, name in enumerate(self.class_names):
            for k in range(hp.images_per_class):
                sample_id = f"c{label:04d}_{k:05d}"
                records.append({
                    "sample_id": sample_id,
                    "label": label,
                    "class_name": name,
                    "seed": sample_seed(hp.seed, sample_id),
                    "prompt": hp.prompt_template.format(name),
                })  # fmt: skip
        return records

    def setup(self, stage: str | None = None) -> None:
        output_dir = self.hparams.output_dir
        done = {r["id"] for r in read_manifest(output_dir)} if output_dir else set()
        self.records = [r for r in self.plan() if r["sample_id"] not in done]
        self.num_done = len(done)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            RecordDataset(self.records), batch_size=self.hparams.batch_size, shuffle=False,
            collate_fn=collate_records,
        )  # fmt: skip
