"""Measure the synthetic set at the end of `expand.py predict`: `set_metrics.json` beside the images,
and, with a W&B logger, the figures in the run summary, a per-class table and a class-labelled grid.

trainer:
  callbacks:
    - class_path: callbacks.set_metrics.SyntheticSetMetrics
      init_args: {oracle: assets/fashion-oracle, clip_model: assets/tiny-fashion-clip}   # tiny world
    # or {clip_model: /models/clip-vit-large-patch14, lpips_net: alex} for real datasets

The CLIP and LPIPS weights are loaded in `setup`, before any image is generated: a missing one gives
one warning naming what to provide, and the other metrics still run.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from diffexpand.paths import in_repo


class SyntheticSetMetrics(Callback):
    """Args:
    oracle: the oracle folder (tiny world): faithfulness, diversity and, with `real_reference`, the
        Fréchet distance of oracle features to real Fashion-MNIST images.
    real_reference: how many real images the Fréchet distance compares with (0: none).
    reference_split: where they come from: `validation` (the validation split carved from the training
        split, at most 1,000 images: the default, so settings chosen by these figures are not chosen on
        the test split) or `test` (the first images of the test split).
    clip_model: a transformers CLIP folder or hub id: CLIP score of each image against the plain class
        prompt ("a photo of a {class name}"), as the papers score (tiny world: assets/tiny-fashion-clip).
    lpips_net: LPIPS backbone (alex, vgg, squeeze): mean pairwise LPIPS within each class.
    grid_per_class: images per class in the grid logged to W&B.
    """

    def __init__(
        self,
        oracle: str | None = None,
        real_reference: int = 0,
        reference_split: str = "validation",
        clip_model: str | None = None,
        lpips_net: str | None = None,
        grid_per_class: int = 8,
    ):
        from diffexpand.evaluation.synthetic_quality import REFERENCE_SPLITS

        if reference_split not in REFERENCE_SPLITS:  # refused before any image is generated
            raise ValueError(f"reference_split must be one of {REFERENCE_SPLITS}, got {reference_split!r}")
        self.oracle, self.real_reference, self.reference_split = oracle, real_reference, reference_split
        self.clip_model, self.lpips_net = clip_model, lpips_net
        self.grid_per_class = grid_per_class
        self._clip = self._lpips = self._oracle = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Load every metric's weights before generation (rank 0, the one that measures)."""
        if not trainer.is_global_zero:
            return
        from diffexpand.evaluation import set_metrics
        from diffexpand.oracle_cnn import OracleCNN

        if self.oracle is not None and self._oracle is None:  # a damaged oracle stops the run now
            self._oracle = OracleCNN.load(str(in_repo(self.oracle) or self.oracle))
        if self.clip_model is not None and self._clip is None:
            path = str(in_repo(self.clip_model) or self.clip_model)
            try:
                self._clip = set_metrics.load_clip(path)
            except set_metrics.MetricWeightsNotAvailable as err:
                warnings.warn(f"CLIP score left out: {err}", stacklevel=1)
        if self.lpips_net is not None and self._lpips is None:
            try:
                self._lpips = set_metrics.build_lpips(self.lpips_net)
            except set_metrics.MetricWeightsNotAvailable as err:
                warnings.warn(f"LPIPS diversity left out: {err}", stacklevel=1)

    def on_predict_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        from diffexpand.evaluation.synthetic_quality import evaluate_set, fashion_mnist_reference_images

        dm = trainer.datamodule
        folder = Path(dm.hparams.output_dir)
        ctx, _ = dm._context(None)
        oracle = self._oracle
        real = None
        if oracle is not None and self.real_reference:
            real = fashion_mnist_reference_images(self.real_reference, self.reference_split)
        result = evaluate_set(
            folder,
            oracle,
            ctx.plain_prompts if self._clip is not None else None,
            (lambda: self._clip) if self._clip is not None else None,
            self._lpips,
            real_images=real,
        )
        if real is not None:
            result["frechet_reference"] = {"split": self.reference_split, "images": len(real)}
        (folder / "set_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        flat = summary_figures(result)
        for logger in trainer.loggers:
            logger.log_metrics(flat)
            if isinstance(logger, WandbLogger):
                log_to_wandb(logger, folder, result, ctx.class_names, self.grid_per_class)
        print("synthetic set: " + ", ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in flat.items()))


def summary_figures(result: dict) -> dict[str, float]:
    """The set-level scalars of an `evaluate_set` result, under `set/…`."""
    flat = {}
    oracle = result.get("oracle", {})
    for key in ("faithfulness", "diversity", "frechet_distance"):
        if oracle.get(key) is not None:  # diversity is undefined for sets of one image per class
            flat[f"set/{key}"] = oracle[key]
    for key in ("clip_score", "lpips_diversity"):
        if key in result:
            flat[f"set/{key}"] = result[key]["mean"]
    return flat


def per_class_rows(result: dict, class_names: list[str]) -> tuple[list[str], list[list]]:
    """(columns, rows) of the per-class figures, one row per class."""
    columns = ["class", "images"]
    sources = []
    if "oracle" in result:
        columns += ["faithfulness", "diversity"]
        sources += [lambda c: result["oracle"]["per_class"].get(c, {}).get("faithfulness")]
        sources += [lambda c: result["oracle"]["per_class"].get(c, {}).get("diversity")]
    for key in ("clip_score", "lpips_diversity"):
        if key in result:
            columns.append(key)
            sources.append(lambda c, key=key: result[key]["per_class"].get(c))
    counts = {c: v.get("images") for c, v in result.get("oracle", {}).get("per_class", {}).items()}
    rows = [[name, counts.get(c), *(f(c) for f in sources)] for c, name in enumerate(class_names)]
    return columns, rows


def log_to_wandb(
    logger: WandbLogger, folder: Path, result: dict, class_names: list[str], per_class: int
) -> None:
    """Summary figures, the per-class table and a grid with one labelled row per class."""
    from diffexpand.preview import contact_sheet

    logger.experiment.summary.update(summary_figures(result) | {"set/images": result["images"]})
    columns, rows = per_class_rows(result, class_names)
    logger.log_table(key="set/per_class", columns=columns, data=rows)
    sheet = contact_sheet(folder, per_class=per_class, label_rows=True, class_names=class_names)
    if sheet is not None:
        logger.log_image(key="set/grid", images=[sheet], caption=[f"{folder.name}: one row per class"])
