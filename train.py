"""Training entry point: `python train.py fit --config configs/<recipe>.yaml`.

One LightningCLI in subclass mode: the config names the LightningModule (tiny prior, concept learner,
classifier) and the LightningDataModule by `class_path` / `init_args`.
"""

from __future__ import annotations

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


def cli_main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    return LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    cli_main()
