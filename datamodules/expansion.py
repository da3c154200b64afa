"""Plans every synthetic image as a record and serves the records to the predict loop.

One record per synthetic image: stable id, label, per-sample seed, and every random choice the method
makes (drawn from that seed, never from a shared generator), so output does not depend on batch size,
world size or order. The method builds its own precomputed inputs (latents, inversions, prototypes …)
through a `Workspace`; this module only plans, skips what is already written, and serves each record
with the inputs the method hands it.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch.utils.data import DataLoader, Dataset

from diffexpand.data.subsets import expanded_count
from diffexpand.manifest import check_run_settings, read_manifest
from diffexpand.methods.base import ExpansionMethod
from diffexpand.methods.common import PlanContext, sample_rng
from diffexpand.methods.inputs import ModelService, RealImages, Workspace
from diffexpand.methods.record import Batch, Record
from diffexpand.seeding import sample_seed
from diffexpand.typed_args import typed_kwargs


class RecordDataset(Dataset):
    """A sized list of records, so Lightning's distributed predict sampler splits it without padding
    or duplicates. Each item is the record and the inputs its method looks up for it."""

    def __init__(self, records: list[Record], method: ExpansionMethod, prepared: dict):
        self.records, self.method, self.prepared = records, method, prepared

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[Record, dict]:
        record = self.records[i]
        return record, self.method.inputs_for(record, self.prepared)


def collate_records(items: list[tuple[Record, dict]]) -> Batch:
    return Batch([record for record, _ in items], [inputs for _, inputs in items])


class ExpansionDataModule(L.LightningDataModule):
    """`real`: init args of `LabeledImageDataModule` (dataset, subset, shots, seed, image size …).
    Without it, `class_names` alone drive prompt-only methods (txt2img)."""

    def __init__(
        self,
        real: dict | None = None,
        class_names: list[str] | None = None,
        expansion_ratio: float = 5.0,
        images_per_class: int | None = None,
        prompt_template: str = "a photo of a {}",
        seed: int = 0,
        batch_size: int = 8,
        output_dir: str | None = None,
        cache_dir: str = ".cache/diffexpand",
        cache_batch_size: int = 64,
    ):
        super().__init__()
        if real is None and not class_names:
            raise ValueError("give `real` (the real subset) or `class_names` (for prompt-only methods)")
        if images_per_class is not None and images_per_class < 1:
            raise ValueError(f"images_per_class must be >= 1, got {images_per_class}")
        if expansion_ratio <= 0:
            raise ValueError(f"expansion_ratio must be > 0, got {expansion_ratio}")
        self.save_hyperparameters()

    # ---- the real subset ------------------------------------------------------------------------
    def _real(self):
        from datamodules.labeled import LabeledImageDataModule

        if not hasattr(self, "_real_dm"):
            kwargs = typed_kwargs(LabeledImageDataModule, self.hparams.real, "data.init_args.real")
            self._real_dm = LabeledImageDataModule(**kwargs)
            self._real_dm.setup("fit")
        return self._real_dm

    def _context(self, concepts) -> tuple[PlanContext, list[int]]:
        """The plan context and the number of real images per class."""
        hp = self.hparams
        if hp.real is None:
            names = list(hp.class_names)
            metas, ids_per_class, counts = ["object"] * len(names), [[] for _ in names], [0] * len(names)
        else:
            real = self._real()
            names, metas = real.class_names, real.metaclasses
            data, ids_per_class = real.train_set.data, [[] for _ in names]
            for j in real.train_set.indices:
                ids_per_class[int(data.labels[j])].append(data.ids[j])
            counts = [len(v) for v in ids_per_class]
        plain = [hp.prompt_template.format(n) for n in names]
        if concepts is not None:
            concepts.check_matches(names)
            class_prompts = [concepts.prompt(c) for c in range(len(names))]
        else:
            class_prompts = plain
        ctx = PlanContext(names, metas, ids_per_class, class_prompts, plain)
        return ctx, counts

    # ---- planning -------------------------------------------------------------------------------
    def plan(self, method: ExpansionMethod, ctx: PlanContext, counts: list[int]) -> list[Record]:
        hp = self.hparams
        records = []
        for label, name in enumerate(ctx.class_names):
            n = expanded_count(counts[label], hp.expansion_ratio, hp.images_per_class)
            for k in range(n):
                record_id = f"c{label:04d}_{k:05d}"
                seed = sample_seed(hp.seed, record_id)
                choices = method.plan(ctx, label, sample_rng(seed), index=k)
                records.append(Record(record_id, label, name, seed, method.name, choices))
        return records

    def _real_images(self) -> RealImages | None:
        if self.hparams.real is None:
            return None
        real = self._real()
        train, hp = real.train_set, real.hparams
        data, indices = train.data, train.indices
        return RealImages(
            ids=[data.ids[int(j)] for j in indices],
            pixels=lambda: torch.stack([train[i]["pixel_values"] for i in range(len(indices))]),
            pil_images=lambda: [data.image(int(j)) for j in indices],
            source=[hp.dataset, hp.root, hp.image_size],
            image_size=hp.image_size,  # cached latents are checked against it
        )

    # ---- Lightning hooks ------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        # the dataset (missing root, empty or bad files) is checked before the diffusion model loads:
        # a wrong setting fails in seconds, not after minutes
        if self.hparams.real is not None:
            self._real()

    def attach(self, method: ExpansionMethod, model: ModelService, concepts) -> None:
        """Plan the records of `method`, leave out those already in the output folder, and let the
        method build its inputs for the rest. `model` is the diffusion model as a service
        (diffexpand.models.runtime.DiffusionRuntime); the caller (the Expander's setup) owns it."""
        hp = self.hparams
        # the concept folder's classes are checked before the model loads (it loads on first use)
        ctx, counts = self._context(concepts)
        ws = Workspace(ctx, self._real_images(), model, Path(hp.cache_dir), hp.cache_batch_size, hp.seed)
        method.setup(ws)
        records = self.plan(method, ctx, counts)
        if hp.output_dir:
            check_run_settings(hp.output_dir, self._run_settings(method, model))
        done = {line["id"] for line in read_manifest(hp.output_dir)} if hp.output_dir else set()
        self.records = [r for r in records if r.id not in done]
        self.num_done = len(records) - len(self.records)
        prepared = method.prepare(ws) if self.records else {}
        self.dataset = RecordDataset(self.records, method, prepared)

    def _run_settings(self, method: ExpansionMethod, model: ModelService) -> dict:
        """What made the synthetic set; a rerun into the same folder must match it to resume."""
        hp = self.hparams
        return {
            "method": method.name,
            "method_settings": method.settings(),
            "model": model.fingerprint(),
            "real": hp.real,
            "class_names": hp.class_names,
            "prompt_template": hp.prompt_template,
            "seed": hp.seed,
        }

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, dataloader_idx: int) -> Batch:
        """The records' inputs go to the device; the records themselves (frozen, tensor-free) stay."""
        return Batch(batch.records, move_data_to_device(batch.inputs, device))

    def predict_dataloader(self) -> DataLoader:
        if not hasattr(self, "dataset"):
            raise RuntimeError("no records planned: the Expander's setup calls `attach` before predicting")
        return DataLoader(
            self.dataset, batch_size=self.hparams.batch_size, shuffle=False, collate_fn=collate_records
        )
