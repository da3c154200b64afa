"""Logging helpers: the resolved config goes to every logger, and a per-class grid of each synthetic
set the classifier trains on is logged as an image (wandb.Image under W&B)."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from diffexpand.preview import contact_sheet
from diffexpand.redact import redact


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Writes config.yaml as usual and pushes the resolved config to the W&B run (W&B otherwise only
    sees the LightningModule's hyper-parameters)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        # config.yaml and the W&B config are written from a copy with secrets masked (leaf by leaf, so
        # every value keeps its type)
        config = self.config.clone()
        for key, value in config.items():
            masked = redact(value, key.rsplit(".", 1)[-1])
            if masked != value:
                config[key] = masked
        self.config = config
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(self.config.as_dict(), allow_val_change=True)


class SyntheticSamplesLogger(Callback):
    """At the start of fit, log each synthetic set's contact sheet (one row per class)."""

    def on_fit_start(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        folders = getattr(dm, "hparams", {}).get("synthetic") or []
        if not trainer.is_global_zero or not folders:
            return
        for folder in folders:
            sheet = contact_sheet(folder)
            if sheet is None:
                continue
            key = f"synthetic/{Path(folder).name}"
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=key, images=[sheet], caption=[f"{folder}: one row per class"])
