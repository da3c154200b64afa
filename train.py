"""Training entry point: `python train.py fit --config configs/<recipe>.yaml`.

One LightningCLI in subclass mode: the config names the LightningModule (tiny prior, concept learner,
classifier) and the LightningDataModule by `class_path` / `init_args`.
"""

from __future__ import annotations

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


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
    cli_main()
