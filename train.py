"""Training entry point: `python train.py fit --config configs/<recipe>.yaml`.

One LightningCLI in subclass mode: the config names the LightningModule (tiny prior, concept learner,
classifier) and the LightningDataModule by `class_path` / `init_args`.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI

from diffexpand.cli import run_with_clear_errors, silence_known_noise


class TrainCLI(LightningCLI):
    def before_fit(self) -> None:
        """Rerunning the same command after a crash or SIGKILL continues from the last checkpoint
        (callbacks/resume.py, which cli_main adds to every trainer)."""
        # Lightning picks the checkpoint to restore inside trainer.fit, before any callback hook runs, so
        # the callback cannot choose it from a hook: ask it here and pass its answer to trainer.fit.
        from callbacks.resume import ResumeFromLast

        fit = self.config_init["fit"]
        resume = next((c for c in self.trainer.callbacks if isinstance(c, ResumeFromLast)), None)
        if resume is not None:
            chosen = resume.fit_arguments(
                self.trainer, self.model, self.datamodule, fit.get("ckpt_path"), fit.get("weights_only")
            )
            for key, value in chosen.items():
                fit[key] = value

    def instantiate_trainer(self, **kwargs):
        """Every trainer draws the project's progress bar (callbacks/progress.py) unless its config names
        another; `enable_progress_bar: false` turns it off, even one a config names."""
        from callbacks.progress import trainer_callbacks

        return super().instantiate_trainer(**{"callbacks": trainer_callbacks(self), **kwargs})

    def after_fit(self) -> None:
        # Classifiers are judged on the test split after the last epoch: run it as part of `fit`.
        if getattr(self.model, "test_after_fit", False) and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule)
        where = outputs_of(self.trainer, self.model)  # before W&B closes its run
        self._finish_wandb()
        if self.trainer.is_global_zero:
            print("\n".join(["Outputs of this run:", *(f"  {line}" for line in where)]))

    def after_test(self) -> None:
        self._finish_wandb()

    def _finish_wandb(self) -> None:
        from callbacks.wandb_run import finish_wandb_runs

        finish_wandb_runs(self.trainer)


def outputs_of(trainer: Trainer, model: LightningModule) -> list[str]:
    """Where a fit put what it wrote, as absolute paths: each checkpoint folder with its last (and, when
    it monitors a metric, best) checkpoint; what the module saved (`saved_to`, a folder or file, or a
    classifier's `export_path`); each logger's run folder (a W&B run's, with how to upload it)."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import WandbLogger

    from callbacks.wandb_run import wandb_run_lines

    lines = []
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint) or not callback.dirpath:
            continue
        found = [("last", callback.last_model_path)]
        if callback.monitor:  # without one, the "best" checkpoint is only the newest top-k file
            found.append((f"best {callback.monitor}", callback.best_model_path))
        found = [f"{kind}: {_absolute(path)}" for kind, path in found if path and Path(path).is_file()]
        written = f" ({'; '.join(found)})" if found else " (no checkpoint written)"
        lines.append(f"checkpoints: {_absolute(callback.dirpath)}{written}")
    saved = getattr(model, "saved_to", None) or model.hparams.get("export_path")
    if saved and Path(saved).exists():
        lines.append(f"saved: {_absolute(saved)}")
    lines += wandb_run_lines(trainer)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            continue
        if folder := getattr(logger, "log_dir", None) or logger.save_dir:  # CSV, TensorBoard …
            lines.append(f"logs ({type(logger).__name__}): {_absolute(folder)}")
    return lines or ["nothing written (no checkpoint callback, logger or saved model)"]


def _absolute(path) -> Path:
    return Path(path).expanduser().resolve()


def cli_main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    from callbacks.resume import ResumeFromLast
    from callbacks.wandb_logging import LoggerSaveConfigCallback

    return TrainCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=LoggerSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [ResumeFromLast()]},  # always there, not configurable
        args=args,
        run=run,
    )


if __name__ == "__main__":
    silence_known_noise()
    run_with_clear_errors(cli_main)
