"""Progress bars and the end-of-fit summary: when the input builders draw a bar, what the training and
predict bars count and print, and that `train.py fit` says where its outputs went."""

import io
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel, RandomDataset
from model_service import CpuModelService
from torch.utils.data import DataLoader

import train
from callbacks.progress import BAR_FORMAT, STEP_FORMAT, RunProgressBar, with_progress_bar
from diffexpand.methods import inputs
from diffexpand.methods.common import PlanContext
from diffexpand.methods.inputs import progress_bar
from diffexpand.progress import NO_PROGRESS, progress_wanted

REPO = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# ---- the input builders' bars (the pure core) -----------------------------------------------------


def test_input_bars_draw_on_a_terminal_unless_switched_off(monkeypatch):
    monkeypatch.delenv(NO_PROGRESS, raising=False)
    assert progress_wanted(Terminal()) and not progress_wanted(io.StringIO())  # a log file, a pipe
    for value, wanted in (("1", False), ("yes", False), ("0", True), ("", True)):
        monkeypatch.setenv(NO_PROGRESS, value)
        assert progress_wanted(Terminal()) is wanted, value

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.delenv(NO_PROGRESS)
    with progress_bar(3, "VAE latents of the real images", "img") as bar:
        bar.update(3)
    assert "VAE latents of the real images" in terminal.getvalue()  # drawn on stderr
    monkeypatch.setenv(NO_PROGRESS, "1")
    assert progress_bar(3, "x", "img").disable


def test_the_inversion_bar_counts_ddim_steps_and_changes_nothing(tiny_sd, tmp_path, monkeypatch):
    from diffexpand.methods import diffii

    ids = ["a0", "a1", "b0"]
    ctx = PlanContext(["a", "b"], ["shoe"] * 2, [["a0", "a1"], ["b0"]], ["p a", "p b"], ["a", "b"])
    ws = inputs.Workspace(ctx, None, CpuModelService(tiny_sd), tmp_path, batch_size=2, seed=0)
    latents = {i: torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(k)) for k, i in enumerate(ids)}
    bars = []

    def recording(*args):
        bars.append(progress_bar(*args))
        return bars[-1]

    monkeypatch.setattr(diffii, "progress_bar", recording)
    monkeypatch.setattr("sys.stderr", Terminal())  # drawn, so the bar counts (a disabled one does not)
    monkeypatch.delenv(NO_PROGRESS, raising=False)
    pool = diffii.inversion_pool(ws, latents, steps=3, guidance=1.0)
    assert [(b.total, b.n, b.unit) for b in bars] == [(2 * 3, 6, "step")]  # 2 chunks of 3 DDIM steps each
    stacked = torch.stack([latents[i] for i in ids])
    plain = torch.cat([
        diffii.invert_latents(tiny_sd, stacked[:2], ["p a", "p a"], 3, 1.0),
        diffii.invert_latents(tiny_sd, stacked[2:], ["p b"], 3, 1.0),
    ])  # fmt: skip
    assert torch.equal(torch.stack([pool[i] for i in ids]), plain)


# ---- RunProgressBar -------------------------------------------------------------------------------


def _trainer(**settings) -> L.Trainer:
    quiet = {"logger": False, "enable_checkpointing": False, "enable_model_summary": False}
    return L.Trainer(callbacks=[RunProgressBar()], limit_val_batches=0, accelerator="cpu", **quiet | settings)


def test_step_based_training_draws_one_bar_of_steps_across_epochs():
    trainer = _trainer(max_steps=5, limit_train_batches=2)  # 3 epochs
    trainer.fit(BoringModel())
    bar = trainer.progress_bar_callback.train_progress_bar
    assert (bar.total, bar.n, bar.unit) == (5, 5, "step")
    assert str(bar).startswith("Epoch 2: 100%") and "| step 5/5 [" in str(bar)
    assert "-" not in bar.desc  # no "Epoch 0/-2"


def test_epoch_based_training_names_the_last_epoch():
    trainer = _trainer(max_epochs=2, limit_train_batches=3)
    trainer.fit(BoringModel())
    bar = trainer.progress_bar_callback.train_progress_bar
    assert (bar.desc, bar.total, bar.n) == ("Epoch 1/1: ", 3, 3)


def test_a_resumed_run_starts_at_its_step_and_rates_only_its_own_steps(tmp_path):
    first = _trainer(max_steps=3, limit_train_batches=2, enable_checkpointing=True, default_root_dir=tmp_path)
    first.fit(BoringModel())
    again = _trainer(max_steps=6, limit_train_batches=2)
    again.fit(BoringModel(), ckpt_path=first.checkpoint_callback.best_model_path, weights_only=True)
    bar = again.progress_bar_callback.train_progress_bar
    assert (bar.initial, bar.n, bar.total) == (3, 6, 6)


def test_slow_steps_and_images_show_seconds_per_unit_not_zero_per_second():
    from tqdm import tqdm

    assert RunProgressBar.BAR_FORMAT == BAR_FORMAT  # what every bar but the step-based one uses
    for fmt, unit in ((STEP_FORMAT, "step"), (BAR_FORMAT, "img")):
        shown = tqdm.format_meter(2, 10, 600.0, prefix="Epoch 0", unit=unit, bar_format=fmt, ncols=100)
        assert f"300.00s/{unit}" in shown and f"{unit}/s" not in shown  # Lightning's: "0.00it/s"


def test_prediction_counts_images_of_this_process():
    trainer = _trainer()
    trainer.predict(BoringModel(), DataLoader(RandomDataset(32, 7), batch_size=2), return_predictions=False)
    bar = trainer.progress_bar_callback.predict_progress_bar
    assert (bar.total, bar.n, bar.unit) == (7, 7, "img")  # 4 batches, the last one short


def test_the_switch_turns_the_lightning_bar_off_too(monkeypatch):
    monkeypatch.setenv(NO_PROGRESS, "1")
    trainer = _trainer(max_steps=1)
    trainer.fit(BoringModel())
    assert trainer.progress_bar_callback.is_disabled


def test_shells_install_the_bar_unless_one_is_named_or_bars_are_off():
    assert [type(c) for c in with_progress_bar(None, None)] == [RunProgressBar]
    named = TQDMProgressBar(refresh_rate=5)
    assert with_progress_bar([named], True) == [named]  # the config's own, and no second one
    checkpoint = L.pytorch.callbacks.ModelCheckpoint()
    assert with_progress_bar([named, checkpoint], False) == [checkpoint]  # Lightning would refuse the pair


@pytest.mark.parametrize("config", ["configs/concept.yaml", "configs/prior.yaml"])
def test_step_based_configs_name_the_bar_and_the_flag_still_turns_it_off(config):
    cpu = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.logger=false"]
    config = REPO / config
    shown = train.cli_main([f"--config={config}", *cpu], run=False).trainer
    assert [type(c) for c in shown.callbacks if isinstance(c, ProgressBar)] == [RunProgressBar]
    hidden = train.cli_main([f"--config={config}", *cpu, "--trainer.enable_progress_bar=false"], run=False)
    assert hidden.trainer.progress_bar_callback is None


# ---- where a fit's outputs went -------------------------------------------------------------------


class SavingModel(BoringModel):
    """Saves a folder at the end of training, as the prior, oracle and concept learner do."""

    def __init__(self, output_dir: str = "model"):
        super().__init__()
        self.save_hyperparameters()

    def on_train_end(self) -> None:
        folder = Path(self.hparams.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "weights.safetensors").write_bytes(b"")
        self.saved_to = folder


def test_fit_ends_by_saying_where_its_outputs_went(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths are printed resolved
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": "ckpt", "every_n_train_steps": 1, "save_last": True, "save_top_k": 0},
    }
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "logs"}}
    train.cli_main([
        "fit", f"--model={__name__}.SavingModel", "--model.output_dir=out/model",
        f"--data={BoringDataModule.__module__}.BoringDataModule", "--trainer.max_steps=2",
        "--trainer.limit_val_batches=0", "--trainer.accelerator=cpu", "--trainer.enable_model_summary=false",
        f"--trainer.callbacks={json.dumps([checkpoint])}", f"--trainer.logger={json.dumps(logger)}",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    summary = printed[printed.index("Outputs of this run:") :]
    assert f"checkpoints: {tmp_path / 'ckpt'} (last: {tmp_path / 'ckpt' / 'last.ckpt'})" in summary
    assert f"saved: {tmp_path / 'out' / 'model'}" in summary
    assert f"logs (CSVLogger): {tmp_path / 'logs' / 'lightning_logs' / 'version_0'}" in summary


def test_fit_names_the_wandb_run_folder_and_how_to_upload_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logger = {"class_path": "lightning.pytorch.loggers.WandbLogger",
              "init_args": {"save_dir": str(tmp_path), "offline": True, "project": "test"}}  # fmt: skip
    train.cli_main([
        "fit", f"--model={BoringModel.__module__}.BoringModel",
        f"--data={BoringDataModule.__module__}.BoringDataModule", "--trainer.max_steps=1",
        "--trainer.limit_val_batches=0", "--trainer.accelerator=cpu", "--trainer.enable_model_summary=false",
        "--trainer.enable_checkpointing=false", f"--trainer.logger={json.dumps(logger)}",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    summary = printed[printed.index("Outputs of this run:") :]
    run = next((tmp_path / "wandb").glob("offline-run-*"))
    assert f"W&B run: {run} (offline; upload: wandb sync {run})" in summary
