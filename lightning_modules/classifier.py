"""Image classifier trained on real + synthetic data: a timm backbone, soft-target cross-entropy with
label smoothing, SGD or AdamW with linear warm-up then cosine decay.

Evaluation is on the split the datamodule serves (`eval_split`: the dataset's test split, or the
validation split carved from the training split): top-1 and mean per-class accuracy every validation
epoch (`val/*`) and at `test`, where the figures are named after the split (`test/acc` or
`validation/acc`), so a result never passes for the other split's. Long-tail sets add
many/medium/few-shot accuracy, Waterbirds per-group and worst-group accuracy. The final confusion
matrix is kept as `test_confusion` (rows: true class, columns: predicted), for the loggers' per-class
plots (callbacks/wandb_logging.py). Both the last epoch and the best epoch are logged (`*_best`);
tables use the last epoch, because picking the best epoch on the evaluation split would be selecting
on it.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from diffexpand.classification.metrics import group_accuracy, per_class_accuracy, shot_splits, split_accuracy
from diffexpand.features.timm_backbone import LITE0_PACKAGE, lite0_package_state_dict, load_state_dict_file


def soft_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy against probability targets, smoothed toward uniform by `label_smoothing`."""
    if label_smoothing:
        targets = targets * (1 - label_smoothing) + label_smoothing / targets.shape[-1]
    return -(targets * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def build_backbone(name: str, num_classes: int, checkpoint: str | None, pretrained: bool, drop_rate: float):
    import timm

    model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, drop_rate=drop_rate)
    if checkpoint == LITE0_PACKAGE:
        full = timm.create_model(name, num_classes=1000)
        full.load_state_dict(lite0_package_state_dict(full))
        state = {k: v for k, v in full.state_dict().items() if not k.startswith("classifier")}
        model.load_state_dict(state, strict=False)
    elif checkpoint:
        head = model.pretrained_cfg.get("classifier", "classifier")
        state = {k: v for k, v in load_state_dict_file(checkpoint).items() if not k.startswith(head)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith(head)]:
            raise ValueError(
                f"checkpoint {checkpoint} does not fit {name}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
    return model


class Classifier(L.LightningModule):
    def __init__(
        self,
        backbone: str = "resnet18",
        checkpoint: str | None = None,
        pretrained: bool = False,
        num_classes: int | None = None,
        optimizer: str = "sgd",
        lr: float = 0.05,
        weight_decay: float = 5e-4,
        momentum: float = 0.9,
        warmup_epochs: float = 0.0,
        label_smoothing: float = 0.0,
        drop_rate: float = 0.0,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        many_shot: int = 100,
        few_shot: int = 20,
        test_after_fit: bool = True,
        export_path: str | None = None,
    ):
        super().__init__()
        if optimizer not in {"sgd", "adamw"}:
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        self.save_hyperparameters()
        self.test_after_fit = test_after_fit
        self.model = None

    def configure_model(self) -> None:
        if self.model is not None:
            return
        hp = self.hparams
        dm = self.trainer.datamodule if self._trainer is not None else None
        num_classes = hp.num_classes or (dm.num_classes if dm is not None else None)
        if num_classes is None:
            raise ValueError("set model.init_args.num_classes or use a datamodule that knows its classes")
        self.num_classes = num_classes
        self.model = build_backbone(hp.backbone, num_classes, hp.checkpoint, hp.pretrained, hp.drop_rate)
        cfg = self.model.pretrained_cfg
        mean, std = hp.mean or cfg.get("mean", (0.5,) * 3), hp.std or cfg.get("std", (0.5,) * 3)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.top1 = MulticlassAccuracy(num_classes, average="micro")
        self.mean_class = MulticlassAccuracy(num_classes, average="macro")
        self.confusion = MulticlassConfusionMatrix(num_classes)  # synced across ranks, unlike _eval_outputs
        self.test_confusion: torch.Tensor | None = None
        self.splits = shot_splits(dm.train_counts(), hp.many_shot, hp.few_shot) if dm is not None else {}
        self.eval_split = getattr(dm, "eval_split", "test")  # names the final figures
        self.best: dict[str, float] = {}
        self._eval_outputs: list[tuple[torch.Tensor, ...]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images + 1) / 2 - self.mean.to(images)) / self.std.to(images)  # [-1, 1] -> backbone's norm
        return self.model(x)

    def training_step(self, batch, batch_idx):
        loss = soft_cross_entropy(self(batch["pixel_values"]), batch["target"], self.hparams.label_smoothing)
        synthetic = (batch["source"] >= 0).float().mean()
        self.log_dict(
            {"train/loss": loss, "train/synthetic_share": synthetic},
            prog_bar=True,
            batch_size=len(batch["label"]),
        )
        return loss

    # ---- evaluation: the same metrics at validation (every epoch) and test ----------------------
    def _eval_step(self, batch):
        preds = self(batch["pixel_values"]).argmax(-1)
        self.top1.update(preds, batch["label"])
        self.mean_class.update(preds, batch["label"])
        self.confusion.update(preds, batch["label"])
        self._eval_outputs.append(
            (preds.cpu(), batch["label"].cpu(), batch.get("group", batch["label"]).cpu())
        )

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        preds, labels, groups = (torch.cat(x) for x in zip(*self._eval_outputs, strict=True))
        self._eval_outputs.clear()
        metrics = {"acc": float(self.top1.compute()), "mean_class_acc": float(self.mean_class.compute())}
        if stage == "test":
            self.test_confusion = self.confusion.compute().cpu()
        self.top1.reset()
        self.mean_class.reset()
        self.confusion.reset()
        if self.splits.get("many") and (self.splits.get("few") or self.splits.get("medium")):  # long tail
            per_class = per_class_accuracy(preds, labels, self.num_classes)
            metrics |= {f"{k}_acc": v for k, v in split_accuracy(per_class, self.splits).items()}
        if not torch.equal(groups, labels):
            metrics |= group_accuracy(preds, labels, groups)
        prefix = self.eval_split if stage == "test" else stage
        logged = {f"{prefix}/{k}": v for k, v in metrics.items()}
        for k, v in metrics.items():
            best = f"{prefix}/{k}_best"
            self.best[best] = max(self.best.get(best, -math.inf), v)
            logged[best] = self.best[best]
        self.log_dict(logged, sync_dist=True)
        return metrics

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self._eval_epoch_end("val")
        else:
            self._eval_outputs.clear()
            self.top1.reset()
            self.mean_class.reset()
            self.confusion.reset()

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    def on_fit_end(self) -> None:
        """Export the trained network as safetensors: DistDiff and Real-Filter can then guide with it,
        `extractor: {kind: timm, model_name: <backbone>, checkpoint: <export_path>}` (as DistDiff's
        official code guides with a classifier trained on the real data)."""
        if self.hparams.export_path and self.trainer.is_global_zero:
            from safetensors.torch import save

            from diffexpand.manifest import atomic_write_bytes

            weights = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
            atomic_write_bytes(self.hparams.export_path, save(weights))  # never a half-written file

    # ---- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        decay = [p for n, p in self.model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim <= 1]  # norms and biases
        groups = [
            {"params": decay, "weight_decay": hp.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=True)
        else:
            opt = torch.optim.AdamW(groups, lr=hp.lr)
        total = self.trainer.estimated_stepping_batches
        warmup = int(hp.warmup_epochs * total / max(1, self.trainer.max_epochs or 1))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
