"""The README's commands, run as a newcomer runs them: in a copy of the repository's files with no
`outputs/`, `runs/` or `wandb/` left over from earlier runs, as subprocesses (shortened)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """The files git would check out (tracked, plus new files not ignored), nothing else."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    root = tmp_path_factory.mktemp("clone")
    for name in filter(None, listed):
        source = REPO / name.decode()
        if source.is_file():
            (root / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name.decode())
    assert not (root / "outputs").exists()
    return root


def run(clone: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_DIR"}  # W&B's default: ./wandb
    return subprocess.run(
        [sys.executable, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=900
    )


def test_readme_commands_run_on_a_fresh_clone(fresh_clone):
    # the classifier before any set exists: one line that says what to run
    early = run(
        fresh_clone, "train.py", "fit", "--config", "configs/classifier.yaml", "--trainer.logger=false"
    )
    assert early.returncode == 1 and "Traceback" not in early.stderr, early.stderr[-2000:]
    assert "make it with `python expand.py predict" in early.stderr

    expanded = run(
        fresh_clone, "expand.py", "predict",
        "--data.init_args.images_per_class=1", "--model.init_args.method.num_inference_steps=2",
        "--model.init_args.method.inversion_steps=2", "--trainer.callbacks.real_reference=100",
    )  # fmt: skip
    assert expanded.returncode == 0, expanded.stderr[-3000:]
    written = fresh_clone / "outputs" / "synthetic"
    assert f"Synthetic set written to {written}" in expanded.stdout
    assert len((written / "metadata.jsonl").read_text().splitlines()) == 10
    assert "clip_score" in (written / "set_metrics.json").read_text()
    assert len(list((fresh_clone / "wandb").glob("offline-run-*"))) == 1

    classified = run(
        fresh_clone, "train.py", "fit", "--config", "configs/classifier.yaml",
        "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1", "--trainer.limit_test_batches=2",
    )  # fmt: skip
    assert classified.returncode == 0, classified.stderr[-3000:]
    assert (fresh_clone / "runs" / "classifier" / "checkpoints" / "last.ckpt").is_file()

    learned = run(
        fresh_clone, "train.py", "fit", "--config", "configs/concept.yaml",
        "--trainer.max_steps=2", "--trainer.logger=false",
    )  # fmt: skip
    assert learned.returncode == 0, learned.stderr[-3000:]
    assert list((fresh_clone / "outputs" / "concepts").glob("*/concepts.json"))
    # nothing the commands wrote went into the committed assets
    for name in ("tiny-fashion-prior-v3", "fashion-oracle", "concepts"):
        for path in (fresh_clone / "assets" / name).rglob("*"):
            if path.is_file():
                assert path.read_bytes() == (REPO / path.relative_to(fresh_clone)).read_bytes(), path
