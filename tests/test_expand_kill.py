"""SIGKILL an expansion partway, rerun the same command: the result equals an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _command(tiny_sd_dir, tiny_concepts, out, cache):
    return [
        sys.executable, "expand.py", "predict", "--config", "configs/expand/diffii.yaml",
        f"--output_dir={out}", "--trainer.accelerator=cpu", f"--model.init_args.pretrained={tiny_sd_dir}",
        f"--model.init_args.concepts={tiny_concepts}", "--model.init_args.method_args.num_inference_steps=3",
        "--model.init_args.method_args.inversion_steps=3", "--data.init_args.real.shots=2",
        "--data.init_args.images_per_class=3", "--data.init_args.batch_size=2",
        f"--data.init_args.cache_dir={cache}", "--trainer.enable_progress_bar=false",
    ]  # fmt: skip


def _records(folder: Path) -> dict[str, dict]:
    lines = (folder / "metadata.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def test_sigkill_then_rerun_matches_an_uninterrupted_run(tiny_sd_dir, tiny_concepts, tmp_path):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    cache = tmp_path / "cache"
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(_command(tiny_sd_dir, tiny_concepts, reference, cache), cwd=REPO, env=env, check=True,
                   capture_output=True)  # fmt: skip

    proc = subprocess.Popen(_command(tiny_sd_dir, tiny_concepts, killed, cache), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    manifest = killed / "metadata.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and len(manifest.read_text().splitlines()) >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(_records(killed))
    assert 6 <= partial < 30

    subprocess.run(_command(tiny_sd_dir, tiny_concepts, killed, cache), cwd=REPO, env=env, check=True,
                   capture_output=True)  # fmt: skip
    lines = (killed / "metadata.jsonl").read_text().splitlines()
    ref, got = _records(reference), _records(killed)
    assert len(lines) == len(got) == len(ref) == 30  # one record per image, no duplicate
    assert got.keys() == ref.keys()
    files = sorted(p.name for p in (killed / "images").iterdir())
    assert files == sorted(Path(r["file_name"]).name for r in ref.values())  # no partial or temp file
    for sid, record in ref.items():
        a = np.asarray(Image.open(reference / record["file_name"]), dtype=int)
        b = np.asarray(Image.open(killed / got[sid]["file_name"]), dtype=int)
        assert np.abs(a - b).max() <= 1
        assert {k: v for k, v in record.items() if k not in {"lambda", "alpha"}} == \
            {k: v for k, v in got[sid].items() if k not in {"lambda", "alpha"}}  # fmt: skip
