"""SIGKILL during concept training and during classifier training; the same command continues from the
last checkpoint and ends with what an uninterrupted run learns. A checkpoint of other settings is never
continued."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffexpand.manifest import TEMPORARY_MARK

REPO = Path(__file__).resolve().parents[1]
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}


def _command(tiny_sd_dir, root: Path, lr: str = "1e-2") -> list[str]:
    checkpoint = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(root / "ckpt"), "every_n_train_steps": 1, "save_last": True,
                                "save_top_k": 0}}  # fmt: skip
    return [
        sys.executable, "train.py", "fit", "--config", "configs/concept.yaml",
        f"--model.init_args.pretrained={tiny_sd_dir}", f"--model.init_args.output_dir={root / 'concepts'}",
        "--model.init_args.lora_rank=4", f"--model.init_args.embedding_lr={lr}", "--data.init_args.shots=2",
        "--data.init_args.batch_size=4", "--trainer.max_steps=12", f"--trainer.default_root_dir={root}",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        f"--trainer.callbacks={json.dumps([checkpoint])}",
    ]  # fmt: skip


def _embeddings(root: Path) -> torch.Tensor:
    files = sorted((root / "concepts" / "embeddings").glob("*.safetensors"))
    return torch.stack([next(iter(load_file(f).values())) for f in files])


def test_concept_training_survives_sigkill_and_resumes_exactly(tiny_sd_dir, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_command(tiny_sd_dir, straight), cwd=REPO, env=ENV, check=True, capture_output=True)

    proc = subprocess.Popen(_command(tiny_sd_dir, killed), cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    last, deadline = killed / "ckpt" / "last.ckpt", time.time() + 300
    while time.time() < deadline and proc.poll() is None and not last.exists():
        time.sleep(0.01)
    time.sleep(0.3)  # a few more steps, likely mid-save of the next checkpoint
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "concepts" / "concepts.json").exists()
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 1 <= step < 12

    done = subprocess.run(_command(tiny_sd_dir, killed), cwd=REPO, env=ENV, check=True, capture_output=True,
                          text=True)  # fmt: skip
    assert "Resuming from" in done.stdout
    torch.testing.assert_close(_embeddings(killed), _embeddings(straight), rtol=0, atol=1e-5)

    with pytest.raises(subprocess.CalledProcessError) as info:  # other settings, same checkpoint folder
        subprocess.run(_command(tiny_sd_dir, killed, lr="5e-3"), cwd=REPO, env=ENV, check=True,
                       capture_output=True, text=True)  # fmt: skip
    assert "was written by a run with other settings" in info.value.stderr
    assert "embedding_lr" in info.value.stderr


def _classifier_command(root: Path, epochs: int = 16) -> list[str]:
    # configs/classifier.yaml as it is (its ModelCheckpoint has no dirpath: <default_root_dir>/checkpoints)
    return [
        sys.executable, "train.py", "fit", "--config", "configs/classifier.yaml",
        f"--trainer.max_epochs={epochs}", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={root}",
        "--model.init_args.backbone=resnet10t", f"--model.init_args.export_path={root / 'final.safetensors'}",
        "--data.init_args.synthetic=[]", "--data.init_args.real.shots=3",
    ]  # fmt: skip


def _classifier_env(root: Path) -> dict:
    """The run's own system temp folder: Lightning's stock writer stages checkpoints there (and leaves
    them behind when killed); ours must not use it."""
    (root / "system-tmp").mkdir(parents=True, exist_ok=True)
    return ENV | {"TMPDIR": str(root / "system-tmp")}


def _check_checkpoint_folder(folder: Path) -> None:
    """After any kill: every .ckpt is complete (loads), anything else is a hidden temporary sibling."""
    for path in folder.iterdir():
        if path.suffix == ".ckpt":
            torch.load(path, map_location="cpu", weights_only=True)
        else:
            assert path.name.startswith(".") and TEMPORARY_MARK in path.name, path


def _kill_after_checkpoint(root: Path, min_epoch: int, delay: float) -> int:
    """Start the run, SIGKILL it `delay` s after last.ckpt holds at least `min_epoch` epochs (into the
    next epoch or the next checkpoint write); the epoch last.ckpt holds then."""
    env, last, log = _classifier_env(root), root / "checkpoints" / "last.ckpt", root / f"kill-{min_epoch}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(_classifier_command(root), cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
        deadline, seen = time.time() + 300, last.stat().st_mtime if last.exists() else 0.0
        while time.time() < deadline and proc.poll() is None:
            if last.exists() and last.stat().st_mtime != seen:
                seen = last.stat().st_mtime
                if torch.load(last, map_location="cpu", weights_only=True)["epoch"] + 1 >= min_epoch:
                    break
            time.sleep(0.01)
        time.sleep(delay)
        assert proc.poll() is None, f"training ended before it could be killed:\n{log.read_text()[-3000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (root / "final.safetensors").exists(), "killed after training ended"
    _check_checkpoint_folder(root / "checkpoints")
    return torch.load(last, map_location="cpu", weights_only=True)["epoch"]


def test_classifier_training_survives_sigkills_and_ends_as_an_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_classifier_command(straight), cwd=REPO, env=_classifier_env(straight), check=True,
                   capture_output=True)  # fmt: skip

    # Three kills, each a different time after a checkpoint: mid-epoch, or inside the next one's writes
    # (the epoch file, the removal of the one before, last.ckpt).
    epochs = [-1]
    for delay in (0.4, 0.05, 0.2):
        epochs.append(_kill_after_checkpoint(killed, min_epoch=epochs[-1] + 3, delay=delay))
    saved = epochs[1:]
    print(f"killed with epochs {saved} saved")
    assert 0 <= saved[0] < saved[1] < saved[2] < 15, saved  # each resumed run got further

    done = subprocess.run(_classifier_command(killed), cwd=REPO, env=_classifier_env(killed), check=True,
                          capture_output=True, text=True)  # fmt: skip
    assert "Resuming from" in done.stdout
    # Nothing partial or stray: last.ckpt and the final epoch's file, no temporary, none in system temp.
    names = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert names == ["epoch=15-step=16.ckpt", "last.ckpt"], names
    assert not [p for p in (killed / "system-tmp").iterdir() if p.is_file()]  # (libraries make folders)
    expected, resumed = load_file(straight / "final.safetensors"), load_file(killed / "final.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=1e-6, msg=name)
