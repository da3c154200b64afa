"""Checkpoint writes that a kill cannot tear: the temporary file is a sibling (same file system, so the
rename is atomic), never the system temp folder, and what a killed writer leaves is cleared on rerun."""

import os
import tempfile

import pytest
import torch

from callbacks.atomic_checkpoint_io import AtomicCheckpointIO
from diffexpand.manifest import remove_stale_temporaries
from train import cli_main


class Killed(BaseException):
    """Stands for SIGKILL: nothing catches it, no clean-up runs."""


def test_a_write_killed_before_the_rename_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))

    def killed_before_rename(src, dst):
        raise Killed

    monkeypatch.setattr(os, "replace", killed_before_rename)
    with pytest.raises(Killed):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()

    assert io.load_checkpoint(path, weights_only=True)["epoch"] == 1  # the old one, complete
    leftovers = [p for p in tmp_path.iterdir() if p.name not in {"last.ckpt", "system-tmp"}]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".last.ckpt.tmp")  # beside it, hidden
    assert not list(system_tmp.iterdir())
    assert torch.load(leftovers[0], weights_only=True)["epoch"] == 2  # the full new state was written
    assert remove_stale_temporaries(tmp_path) == leftovers
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["last.ckpt"]


def test_stale_temporaries_newer_than_the_run_are_spared(tmp_path):
    old, new = tmp_path / ".a.png.tmp1-2", tmp_path / ".b.png.tmp3-4"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (100.0, 100.0))
    assert remove_stale_temporaries(tmp_path, older_than=200.0) == [old]
    assert new.exists() and not old.exists()
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_train_writes_checkpoints_atomically_and_clears_a_killed_writers_leftovers(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    leftover = checkpoints / ".last.ckpt.tmp999-1"
    leftover.write_bytes(b"half a checkpoint")
    cli = cli_main([
        "fit", "--config", "configs/classifier.yaml", "--trainer.max_epochs=1", "--trainer.logger=false",
        "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}", "--model.init_args.backbone=resnet10t",
        "--model.init_args.test_after_fit=false", "--data.init_args.synthetic=[]",
        "--data.init_args.real.shots=1",
    ])  # fmt: skip
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert not leftover.exists()
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch=0-step=1.ckpt", "last.ckpt"]
