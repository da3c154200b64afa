"""Measure the synthetic set at the end of `expand.py predict` and write `set_metrics.json` beside it.

trainer:
  callbacks:
    - class_path: callbacks.set_metrics.SyntheticSetMetrics
      init_args: {oracle: assets/fashion-oracle}          # tiny benchmark
    # or {clip_model: /models/clip-vit-large-patch14, lpips_net: alex} for real datasets
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class SyntheticSetMetrics(Callback):
    def __init__(
        self, oracle: str | None = None, clip_model: str | None = None, lpips_net: str | None = None
    ):
        self.oracle, self.clip_model, self.lpips_net = oracle, clip_model, lpips_net

    def on_predict_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        from diffexpand.evaluation.synthetic_quality import evaluate_set
        from diffexpand.oracle_cnn import OracleCNN

        dm = trainer.datamodule
        folder = Path(dm.hparams.output_dir)
        prompts = None
        if self.clip_model is not None:  # the plain class prompt, as the papers score
            ctx, _ = dm._context(None)
            prompts = ctx.plain_prompts
        oracle = OracleCNN.load(self.oracle) if self.oracle else None
        result = evaluate_set(folder, oracle, prompts, self.clip_model, self.lpips_net)
        (folder / "set_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        flat = {}
        if "oracle" in result:
            flat |= {f"set/{k}": result["oracle"][k] for k in ("faithfulness", "diversity")}
        for key in ("clip_score", "lpips_diversity"):
            if key in result:
                flat[f"set/{key}"] = result[key]["mean"]
        for logger in trainer.loggers:
            logger.log_metrics(flat)
        print("synthetic set: " + ", ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in flat.items()))
