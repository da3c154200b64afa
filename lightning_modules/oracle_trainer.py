"""Trains the evaluation oracle on the full Fashion-MNIST train split; tests on the test split."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from diffexpand.oracle_cnn import OracleCNN


def _augment(images: torch.Tensor) -> torch.Tensor:
    """Random 2-pixel translation (pad + crop), batched."""
    padded = F.pad(images, (2, 2, 2, 2), value=-1.0)
    dx, dy = torch.randint(0, 5, (2,)).tolist()
    return padded[..., dy : dy + images.shape[-2], dx : dx + images.shape[-1]]


class OracleTrainer(L.LightningModule):
    def __init__(
        self,
        num_classes: int = 10,
        width: int = 32,
        lr: float = 3e-3,
        weight_decay: float = 5e-4,
        label_smoothing: float = 0.05,
        output_dir: str = "outputs/fashion-oracle",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = OracleCNN(num_classes, width)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def training_step(self, batch, batch_idx):
        logits = self.model(_augment(batch["pixel_values"]))
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.val_acc(self.model(batch["pixel_values"]), batch["label"])
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        self.test_acc(self.model(batch["pixel_values"]), batch["label"])
        self.log("test/acc", self.test_acc)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero and self.hparams.output_dir:
            self.model.save(Path(self.hparams.output_dir))
            self.saved_to = Path(self.hparams.output_dir)  # train.py names it with the run's other outputs
