"""Writes each predicted batch as PNG files plus manifest lines, atomically."""

from __future__ import annotations

import io
import time
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from diffexpand.manifest import append_manifest, atomic_write_bytes
from diffexpand.preview import contact_sheet

# Keys of a record that are bookkeeping, not something a user of the synthetic set needs.
_INTERNAL = {"sample_id"}


def png_bytes(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.numpy()).save(buf, format="PNG")
    return buf.getvalue()


class SyntheticImageWriter(BasePredictionWriter):
    def __init__(self, output_dir: str):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.started = time.time()

    def on_predict_start(self, trainer, pl_module) -> None:
        # A killed run can leave temporary files (never a partial image: those are only renamed
        # when complete). Remove the ones older than this run; newer ones belong to live ranks.
        if trainer.is_global_zero:
            for tmp in self.output_dir.glob("images/.*.tmp*"):
                if tmp.stat().st_mtime < self.started:
                    tmp.unlink(missing_ok=True)

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ):
        self.output_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for image, record in zip(prediction["images"], prediction["records"], strict=True):
            file_name = f"images/{record['sample_id']}.png"
            atomic_write_bytes(self.output_dir / file_name, png_bytes(image))
            lines.append(
                {"file_name": file_name, "label": record["label"], "id": record["sample_id"]}
                | {k: v for k, v in record.items() if k not in _INTERNAL | {"label"}}
            )
        append_manifest(self.output_dir, lines)

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier("synthetic-set-written")  # every rank's images are on disk
        if trainer.is_global_zero:
            sheet = contact_sheet(self.output_dir)
            if sheet is not None:
                sheet.save(self.output_dir / "preview.png")
