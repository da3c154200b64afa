"""The project's progress bar: Lightning's tqdm bar with counts and rates that mean something.

* Step-based training (`max_steps` set, `max_epochs` left at -1) draws one bar for the whole run,
  "Epoch 3:  45%|████    | step 900/2000", not a bar per epoch titled with an epoch total that does
  not exist (Lightning's rich bar printed "Epoch 0/-2"). A resumed run's bar starts at its
  checkpoint's step, and its rate counts the steps of this run only.
* Prediction counts images (the samples this process predicts), not batches.
* Rates are the bar's count over its elapsed time, printed as s/step or s/img below one per second.
  Lightning's bars printed "0.00it/s" for slow batches: the rich bar's speed only counts updates of the
  last 30 s, and the tqdm bar prints batches per second with two decimals.

DIFFEXPAND_NO_PROGRESS (anything but "" or "0") turns it off, as it does the input builders' bars
(diffexpand.methods.inputs); ranks other than 0 draw nothing, as with every Lightning bar. Unlike the
input builders' bars it also draws into a file or pipe, as Lightning's bars do (nohup, sbatch logs).

A shell installs it with `trainer_callbacks` (train.py; expand.py can do the same): in every trainer
whose config names no progress bar, and no bar at all under `trainer.enable_progress_bar: false`,
even where a config names one.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI

from diffexpand.progress import progress_switched_off

# Lightning's formats with tqdm's rate_fmt, which turns into "s/<unit>" below one unit per second.
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
STEP_FORMAT = "{l_bar}{bar}| step {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def counts_steps(trainer: Trainer) -> bool:
    """Training is bounded by `max_steps` alone (Lightning sets `max_epochs` to -1 then)."""
    return trainer.max_steps > 0 and trainer.max_epochs in (None, -1)


class RunProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar with a step-based training bar, an images-per-second predict bar, and rates
    that do not round to zero (module docstring). Takes `TQDMProgressBar`'s arguments."""

    BAR_FORMAT = BAR_FORMAT

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False):
        super().__init__(refresh_rate, process_position, leave)
        self._predict_sizes: tuple[int, int] | None = None  # (samples, batch size) of the current loader

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if progress_switched_off():
            self.disable()

    # ---- training -----------------------------------------------------------------------------------
    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        if counts_steps(self.trainer):
            bar.unit, bar.bar_format = "step", STEP_FORMAT
        return bar

    def on_train_start(self, trainer: Trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        if counts_steps(trainer):  # one bar for all epochs; here, since a resumed run may start mid-epoch
            bar = self.train_progress_bar  # (Lightning calls no on_train_epoch_start then)
            bar.reset(total=trainer.max_steps)
            bar.initial = bar.n = trainer.global_step  # restored already: the rate counts this run's steps
            bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_train_epoch_start(self, trainer: Trainer, *args: Any) -> None:
        if counts_steps(trainer):
            self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch}")
            return
        super().on_train_epoch_start(trainer, *args)
        if trainer.max_epochs and trainer.max_epochs > 0:
            self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch}/{trainer.max_epochs - 1}")

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not counts_steps(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        step, bar = trainer.global_step, self.train_progress_bar
        if not bar.disable and self._should_update(step, bar.total):
            bar.n = step  # optimizer steps, what max_steps counts (batches differ under accumulation)
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # and redraws

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not counts_steps(trainer):
            return super().on_train_epoch_end(trainer, pl_module)
        if not self.train_progress_bar.disable:  # kept open: one bar for the run, even with leave=True
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    # ---- prediction ---------------------------------------------------------------------------------
    def init_predict_tqdm(self):
        bar = super().init_predict_tqdm()
        bar.unit = "img"
        return bar

    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        if batch_idx != 0:
            return
        # a new dataloader, whose batch count the parent has just set as the total: count samples
        self._predict_sizes = _samples_and_batch_size(trainer, dataloader_idx)
        bar = self.predict_progress_bar
        if self._predict_sizes is None:
            bar.unit = "batch"
        else:
            bar.unit, bar.total = "img", self._predict_sizes[0]
        bar.refresh()  # the first batch may take minutes: not "0/<batches> img" until it ends

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._predict_sizes is None:
            return super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        samples, batch_size = self._predict_sizes
        bar = self.predict_progress_bar
        if not bar.disable and self._should_update(
            batch_idx + 1, self.total_predict_batches_current_dataloader
        ):
            bar.n = min(samples, (batch_idx + 1) * batch_size)  # every batch but the last is full
            bar.refresh()


def _samples_and_batch_size(trainer: Trainer, dataloader_idx: int) -> tuple[int, int] | None:
    """(samples this process predicts, batch size) of a predict dataloader, or None where it does not
    say. The sampler is the one Lightning installed: under DDP it knows this process's share."""
    loaders = trainer.predict_dataloaders
    loader = loaders[dataloader_idx] if isinstance(loaders, list | tuple) else loaders
    # the batch sampler's: Lightning rebuilds the loader around it (the loader's batch_size is None then)
    batches = getattr(loader, "batch_sampler", None)
    try:
        samples, batch_size = len(batches.sampler), batches.batch_size
    except (AttributeError, TypeError):  # an iterable dataset, a batch sampler of another kind
        return None
    if not isinstance(batch_size, int) or batch_size < 1 or getattr(batches, "drop_last", True):
        return None
    return samples, batch_size


def with_progress_bar(callbacks: list[Callback] | Callback | None, enabled: bool | None) -> list[Callback]:
    """A trainer's callbacks with its progress bar settled, for `Trainer(callbacks=...)`: no bar when
    `enabled` (`enable_progress_bar`) is False, even one a config names (Lightning refuses that pair);
    a `RunProgressBar` when none is named (instead of Lightning's default bar); else as configured."""
    if callbacks is None:
        callbacks = []
    callbacks = list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
    if enabled is False:
        return [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(RunProgressBar())
    return callbacks


def trainer_callbacks(cli: LightningCLI) -> list[Callback]:
    """The callbacks a LightningCLI shell passes to its trainer, progress bar settled (`with_progress_bar`):
    `super().instantiate_trainer(**{"callbacks": trainer_callbacks(self), **kwargs})`."""
    config = cli.config_init[cli.subcommand]["trainer"] if cli.subcommand else cli.config_init["trainer"]
    return with_progress_bar(config.get("callbacks"), config.get("enable_progress_bar"))
