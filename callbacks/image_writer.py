"""Writes each predicted batch as PNG files plus manifest lines, atomically, off the predict loop.

PNG encoding is CPU work of the order of the GPU's time per image at 512 px (docs/measurements/
2026-11-23.md); done inline it would leave the GPU idle for much of each batch. Batches are therefore
encoded by a thread pool (zlib releases the GIL) while the next batch is generated, and committed in
order by one thread: images first (atomic renames), then the batch's manifest lines. A batch whose
lines are not in the manifest is regenerated on the next run, so a crash or SIGKILL with batches in
flight loses nothing but time. When the run ends (or fails), the set's dataset card (README.md: column
types, `label` as a ClassLabel of the class names) is rewritten from the whole manifest, so a resumed or
extended set gets one that lists every record's keys.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter

from diffexpand.manifest import (
    append_manifest,
    atomic_write_bytes,
    image_file_name,
    png_bytes,
    remove_stale_temporaries,
    write_dataset_card,
)
from diffexpand.preview import contact_sheet


class SyntheticImageWriter(BasePredictionWriter):
    """`workers`: PNG-encoding threads (default: up to 8, one per spare core); `max_pending`: batches
    generated but not yet committed (bounds host memory)."""

    def __init__(self, output_dir: str, workers: int | None = None, max_pending: int = 2):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.started = time.time()
        self.workers = workers or max(1, min(8, (os.cpu_count() or 2) - 1))
        self.max_pending = max_pending
        self._encoders = self._committer = None
        self._pending: deque[Future] = deque()

    def on_predict_start(self, trainer, pl_module) -> None:
        # A killed run can leave temporary files (never a partial image: those are only renamed
        # when complete). Remove the ones older than this run; newer ones belong to live ranks.
        if trainer.is_global_zero:
            remove_stale_temporaries(self.output_dir / "images", older_than=self.started)
        self._encoders = ThreadPoolExecutor(self.workers, thread_name_prefix="png")
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="commit")

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ):
        self.output_dir.mkdir(parents=True, exist_ok=True)
        lines, encoded = [], []
        for image, line in zip(prediction["images"], prediction["records"], strict=True):
            file_name = image_file_name(line["id"])
            encoded.append(self._encoders.submit(self._write_image, self.output_dir / file_name, image))
            lines.append({"file_name": file_name} | line)
        self._pending.append(self._committer.submit(self._commit, encoded, lines))
        while len(self._pending) > self.max_pending or (self._pending and self._pending[0].done()):
            self._pending.popleft().result()  # re-raises a failed write (e.g. a full disk) here

    @staticmethod
    def _write_image(path: Path, image) -> None:
        atomic_write_bytes(path, png_bytes(image))

    def _commit(self, encoded: list[Future], lines: list[dict]) -> None:
        for future in encoded:
            future.result()  # every image of the batch is complete on disk before its lines
        append_manifest(self.output_dir, lines)

    def _drain(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            for pool in (self._encoders, self._committer):
                if pool is not None:
                    pool.shutdown(wait=True)
            self._encoders = self._committer = None

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        # Before any callback's on_predict_end (set metrics, W&B) reads the set: all of it is on disk.
        self._drain()
        trainer.strategy.barrier("synthetic-set-written")  # every rank's images too

    def on_predict_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:  # after every rank's images (the barrier above)
            sheet = contact_sheet(self.output_dir, label_rows=True)
            if sheet is not None:
                sheet.save(self.output_dir / "preview.png")
            write_dataset_card(self.output_dir)

    def on_exception(self, trainer, pl_module, exception) -> None:
        # Commit what was generated before the error, and describe it in the card; a second error is
        # not allowed to hide the first.
        try:
            self._drain()
            if trainer.is_global_zero:
                write_dataset_card(self.output_dir)
        except Exception:
            pass
