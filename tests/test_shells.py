"""The two shells' wiring on a BoringModel-sized module, in-process and in seconds: `train.py fit` continues
the last checkpoint (callbacks/resume.py) unless told otherwise, and `expand.py predict` keeps no
predictions in memory by default."""

import json

import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel

import expand
import train
from callbacks.atomic_checkpoint_io import AtomicCheckpointIO
from callbacks.resume import ResumeFromLast


class TinyModel(BoringModel):
    """BoringModel with a hyper-parameter (what a rerun must match) and a count of the steps it trained."""

    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.steps_run = 0

    def training_step(self, batch, batch_idx):
        self.steps_run += 1
        return super().training_step(batch, batch_idx)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class OutputDataModule(BoringDataModule):
    """expand.py links --output_dir to the datamodule's output_dir."""

    def __init__(self, output_dir: str = "outputs/synthetic"):
        super().__init__()


def _fit(root, max_steps: int, *extra: str, top_k: int = 0):
    # No dirpath: <root>/checkpoints.
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"every_n_train_steps": 1, "save_last": True, "save_top_k": top_k},
    }
    return train.cli_main([
        "fit", f"--model={__name__}.TinyModel", f"--data={BoringDataModule.__module__}.BoringDataModule",
        f"--trainer.max_steps={max_steps}", "--trainer.limit_val_batches=0", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.accelerator=cpu", f"--trainer.default_root_dir={root}",
        f"--trainer.callbacks={json.dumps([checkpoint])}", *extra,
    ])  # fmt: skip


@pytest.fixture
def loads(monkeypatch):
    """The weights_only of every checkpoint load through the atomic writer's plugin."""
    calls, load = [], AtomicCheckpointIO.load_checkpoint

    def recording(self, path, map_location=None, weights_only=None):
        calls.append((str(path), weights_only))
        return load(self, path, map_location=map_location, weights_only=weights_only)

    monkeypatch.setattr(AtomicCheckpointIO, "load_checkpoint", recording)
    return calls


def test_fit_continues_the_last_checkpoint_with_weights_only(tmp_path, capsys, loads):
    first = _fit(tmp_path, 2)
    assert sum(isinstance(c, ResumeFromLast) for c in first.trainer.callbacks) == 1  # added, not configured
    assert first.trainer.ckpt_path is None and first.model.steps_run == 2
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    capsys.readouterr()

    again = _fit(tmp_path, 4)
    assert f"Resuming from {last}" in capsys.readouterr().out
    assert again.trainer.ckpt_path == str(last)
    assert again.model.steps_run == 2 and again.trainer.global_step == 4  # continued, not restarted
    # Loaded through the atomic plugin, so it was installed before Lightning restored the checkpoint.
    assert loads == [(str(last), True)]


def test_fit_refuses_a_last_checkpoint_written_with_other_settings(tmp_path):
    _fit(tmp_path, 2)
    with pytest.raises(ValueError, match=r"other settings \(hyper_parameters\.lr differ\)"):
        _fit(tmp_path, 4, "--model.init_args.lr=0.2")
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_an_explicit_ckpt_path_wins_over_last(tmp_path, capsys, loads):
    _fit(tmp_path, 3, top_k=-1)
    first = tmp_path / "checkpoints" / "epoch=0-step=1.ckpt"
    assert first.is_file() and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    capsys.readouterr()

    cli = _fit(tmp_path, 4, f"--ckpt_path={first}", "--weights_only=false", top_k=-1)
    assert "Resuming from" not in capsys.readouterr().out
    assert cli.trainer.ckpt_path == str(first)
    assert cli.model.steps_run == 3  # from step 1, not from last.ckpt's step 3
    assert loads == [(str(first), False)]  # the user's weights_only too


def test_fit_without_a_checkpoint_starts_fresh(tmp_path, loads):
    cli = _fit(tmp_path, 2, "--trainer.callbacks=null", "--trainer.enable_checkpointing=false")
    assert any(isinstance(c, ResumeFromLast) for c in cli.trainer.callbacks)
    assert cli.trainer.ckpt_path is None and cli.model.steps_run == 2 and not loads


@pytest.fixture
def predict_calls(monkeypatch):
    """The arguments expand.py passes to its trainer's predict, which is not run (no Expander here). The
    trainer is patched, not the Trainer class: the CLI reads the arguments of Trainer.predict."""
    calls, instantiate = [], expand.ExpandCLI.instantiate_trainer

    def instantiate_recording(self, **kwargs):
        trainer = instantiate(self, **kwargs)
        trainer.predict = lambda **kwargs: calls.append(kwargs)
        return trainer

    monkeypatch.setattr(expand.ExpandCLI, "instantiate_trainer", instantiate_recording)
    return calls


def _expand_args(tmp_path) -> list[str]:
    config = tmp_path / "boring.yaml"
    config.write_text(json.dumps({"model": {"class_path": f"{__name__}.TinyModel"},
                                  "data": {"class_path": f"{__name__}.OutputDataModule"}}))  # fmt: skip
    return ["--config", str(config), "--trainer.logger=false", f"--output_dir={tmp_path / 'out'}"]


def test_expand_predict_keeps_no_predictions_in_memory_by_default(tmp_path, predict_calls, capsys):
    expand.cli_main(["predict", *_expand_args(tmp_path)])
    assert [call["return_predictions"] for call in predict_calls] == [False]
    assert str((tmp_path / "out").resolve()) in capsys.readouterr().out

    expand.cli_main(["predict", *_expand_args(tmp_path), "--return_predictions=true"])  # the user's wins
    assert predict_calls[-1]["return_predictions"] is True


def test_expand_without_a_subcommand_parses_and_instantiates(tmp_path, predict_calls):
    cli = expand.cli_main(_expand_args(tmp_path), run=False)
    assert cli.subcommand is None and "return_predictions" not in cli.config
    assert isinstance(cli.model, TinyModel) and not predict_calls
