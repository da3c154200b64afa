"""Training entry point: `python train.py fit --config configs/<recipe>.yaml`.

One LightningCLI in subclass mode: the config names the LightningModule (tiny prior, concept learner,
classifier) and the LightningDataModule by `class_path` / `init_args`.
"""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


class TrainCLI(LightningCLI):
    def before_fit(self) -> None:
        """Rerunning the same command after a crash or SIGKILL continues from the last checkpoint (a
        ModelCheckpoint with save_last; without a dirpath it writes to <default_root_dir>/checkpoints),
        loaded with weights_only=True. Checkpoints are written atomically in their own folder."""
        from lightning.pytorch.plugins.io import TorchCheckpointIO

        from callbacks.atomic_checkpoint_io import AtomicCheckpointIO
        from diffexpand.manifest import remove_stale_temporaries

        fit = self.config_init["fit"]
        if type(self.trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # leave a chosen plugin alone
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        for callback in self.trainer.checkpoint_callbacks:
            if callback.dirpath is None:
                # Lightning's default folder holds the logger's run id, new on every launch, so a rerun
                # would never find it: use one folder per default_root_dir instead.
                root = Path(self.trainer.default_root_dir).expanduser()
                callback.dirpath = os.path.realpath(root / "checkpoints")
            if self.trainer.is_global_zero:  # no rank has started writing yet
                remove_stale_temporaries(callback.dirpath)
        if fit.get("ckpt_path") is None:
            for callback in self.trainer.checkpoint_callbacks:
                last = Path(callback.dirpath) / "last.ckpt"
                if callback.save_last and last.is_file():
                    self._check_same_run(last)
                    fit["ckpt_path"] = str(last)
                    print(f"Resuming from {last} (pass --ckpt_path to choose another checkpoint)")
                    break
        if "weights_only" in fit and fit.get("weights_only") is None:
            fit["weights_only"] = True  # never unpickle arbitrary objects from a checkpoint

    def _check_same_run(self, checkpoint: Path) -> None:
        """Refuse to continue a checkpoint that another configuration wrote into the same folder."""
        import torch

        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        ours = {"hyper_parameters": dict(self.model.hparams),
                "datamodule_hyper_parameters": dict(getattr(self.datamodule, "hparams", {}))}  # fmt: skip
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

    def after_fit(self) -> None:
        # Classifiers are judged on the test split after the last epoch: run it as part of `fit`.
        if getattr(self.model, "test_after_fit", False) and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule)
        self._finish_wandb()

    def after_test(self) -> None:
        self._finish_wandb()

    def _finish_wandb(self) -> None:
        """Close W&B runs so the summary and the offline log are complete when the command returns
        (Lightning leaves them open for notebooks; in-process callers such as sweeps start new ones)."""
        from lightning.pytorch.loggers import WandbLogger

        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger.experiment.finish()


def cli_main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    from callbacks.wandb_logging import LoggerSaveConfigCallback

    return TrainCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=LoggerSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    cli_main()
