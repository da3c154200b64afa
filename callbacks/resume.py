"""Rerunning the same `fit` command after a crash or SIGKILL continues from the last checkpoint.

A killed run is only worth rerunning if the rerun finds its checkpoint, can trust it and can load it:

* a ModelCheckpoint without a dirpath writes to <default_root_dir>/checkpoints (Lightning's default
  folder holds the logger's run id, new on every launch, so a rerun would never find it);
* checkpoints are written atomically (callbacks/atomic_checkpoint_io.py) and what a killed writer left
  beside them is removed before anything is written;
* `last.ckpt` of the first ModelCheckpoint with save_last is continued unless the user named a checkpoint,
  and only if the model and data settings are the ones that wrote it;
* checkpoints are loaded with weights_only=True: never unpickle arbitrary objects.

Lightning chooses the checkpoint to restore in `Trainer._fit_impl` (`_select_ckpt_path`) and hands it to
`_run` as an argument, before any callback hook runs; it then restores the LightningModule (its
`on_load_checkpoint` and state dict) before any callback's `on_load_checkpoint`. So the choice and the
settings check cannot live in a hook: the shell asks `ResumeFromLast.fit_arguments` for `trainer.fit`'s
`ckpt_path` and `weights_only` (train.py, `TrainCLI.before_fit`). Lightning's own `ckpt_path="last"` is not
used: it warns on every first run, picks the newest `last*.ckpt` of any ModelCheckpoint (not the one that
was checked), and its stateful `Trainer.ckpt_path` setter would also apply to the `trainer.test` that
runs after fit. Everything that can wait for the trainer's `setup` hook does (it runs before the
checkpoint is restored, on every rank, with the global rank known).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from callbacks.atomic_checkpoint_io import AtomicCheckpointIO
from diffexpand.manifest import remove_stale_temporaries


class ResumeFromLast(Callback):
    """Makes `fit` continue a killed run of the same settings from its last checkpoint (module docstring)."""

    def fit_arguments(
        self,
        trainer: Trainer,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | None = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """`ckpt_path` and `weights_only` for `trainer.fit(model, datamodule, ...)`, given the user's: a
        checkpoint the user named wins; otherwise the last checkpoint if there is one (refused when it was
        written with other settings). Call it before `trainer.fit`."""
        _default_checkpoint_folders(trainer)
        if ckpt_path is None:
            for callback in trainer.checkpoint_callbacks:
                if not (isinstance(callback, ModelCheckpoint) and callback.save_last):
                    continue
                last = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
                if last.is_file():
                    check_same_run(last, model, datamodule)
                    ckpt_path = str(last)
                    print(f"Resuming from {last} (pass --ckpt_path to choose another checkpoint)")
                    break
        return {"ckpt_path": ckpt_path, "weights_only": True if weights_only is None else weights_only}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != TrainerFn.FITTING:
            return
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # leave a chosen plugin alone
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        _default_checkpoint_folders(trainer)  # ModelCheckpoint.setup, which would pick one, runs after this
        if trainer.is_global_zero:  # no rank has started writing yet
            for callback in trainer.checkpoint_callbacks:
                remove_stale_temporaries(callback.dirpath)


def _default_checkpoint_folders(trainer: Trainer) -> None:
    """<default_root_dir>/checkpoints for every ModelCheckpoint without a dirpath."""
    for callback in trainer.checkpoint_callbacks:
        if callback.dirpath is None:
            root = Path(trainer.default_root_dir).expanduser()
            callback.dirpath = os.path.realpath(root / "checkpoints")


def check_same_run(checkpoint: Path, model: LightningModule, datamodule: LightningDataModule | None) -> None:
    """Refuse to continue a checkpoint that another configuration wrote into the same folder."""
    from diffexpand.models.identity import read_checkpoint

    saved = read_checkpoint(
        checkpoint, "delete it to start the run afresh, or resume from another checkpoint (--ckpt_path)"
    )
    datamodule_hparams = dict(getattr(datamodule, "hparams", {}))
    ours = {"hyper_parameters": dict(model.hparams), "datamodule_hyper_parameters": datamodule_hparams}
    changed = []
    for part, mine in ours.items():
        theirs = saved.get(part, {})
        changed += [
            f"{part}.{k}" for k in mine.keys() | theirs.keys() if str(mine.get(k)) != str(theirs.get(k))
        ]
    if changed:
        raise ValueError(
            f"{checkpoint} was written by a run with other settings ({', '.join(sorted(changed)[:8])} "
            "differ): rerun with the same settings to continue it, or give this run its own "
            "checkpoint folder (trainer.callbacks ModelCheckpoint dirpath), or delete the old one"
        )
