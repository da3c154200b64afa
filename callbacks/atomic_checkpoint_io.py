"""Checkpoints written so that a SIGKILL at any moment leaves either the old file or the new one.

Lightning's own writer stages a checkpoint in the system temp folder and then moves it into place. When
that folder is on another file system than the run (a cluster's local /tmp, a network home), the move is
a copy: a kill mid-copy leaves a truncated `last.ckpt` that the rerun cannot load, and every kill leaves
a checkpoint-sized file behind in /tmp. Here the temporary file is a hidden sibling of the checkpoint,
fsynced and renamed over it (one atomic step on every POSIX file system); a leftover from a kill is
removed when the next run starts (callbacks/resume.py, diffexpand.manifest.remove_stale_temporaries).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from diffexpand.manifest import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local writes are temp-sibling + fsync + rename; remote paths unchanged."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getbuffer())
