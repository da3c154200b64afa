"""SIGKILL an expansion partway, rerun the same command: the result equals an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from forked_cli import ForkedCLI, alive
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _command(tiny_sd_dir, tiny_concepts, out, cache, per_class=3):
    return [
        sys.executable, "expand.py", "predict", "--config", "configs/expand/diffii.yaml",
        f"--output_dir={out}", "--trainer.accelerator=cpu", f"--model.init_args.pretrained={tiny_sd_dir}",
        f"--model.init_args.concepts={tiny_concepts}", "--model.init_args.method.num_inference_steps=3",
        "--model.init_args.method.inversion_steps=3", "--data.init_args.real.shots=2",
        f"--data.init_args.images_per_class={per_class}", "--data.init_args.batch_size=2",
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


def _check_consistent(folder: Path) -> int:
    """Invariants that must hold after any kill: every manifest line names a complete image, no id
    appears twice, and nothing but PNGs and temporary files is in images/."""
    manifest = folder / "metadata.jsonl"
    if not manifest.exists():
        return 0
    from diffexpand.manifest import read_manifest

    records = read_manifest(folder)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "a duplicated record"
    for r in records:
        with Image.open(folder / r["file_name"]) as image:
            image.load()  # complete, decodable
    for p in (folder / "images").iterdir():
        assert p.suffix == ".png" or ".tmp" in p.name, p
    return len(records)


def _lines(folder: Path) -> int:
    manifest = folder / "metadata.jsonl"
    return len(manifest.read_text().splitlines()) if manifest.exists() else 0


def test_twenty_random_sigkills_lose_nothing(tiny_sd_dir, tiny_concepts, tmp_path):
    """100 images in 50 batches of 2. Each of 20 SIGKILLs lands at a seeded random point: a quarter at a
    random time during start-up (imports, model loading, cache building), the rest a random 0-20 ms
    after the run has recorded 1-2 more batches (mid-generation, mid-write, mid-append)."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    reference, killed, cache = tmp_path / "reference", tmp_path / "killed", tmp_path / "cache"
    started = time.time()
    subprocess.run(_command(tiny_sd_dir, tiny_concepts, reference, tmp_path / "ref-cache", per_class=10),
                   cwd=REPO, env=env, check=True, capture_output=True)  # fmt: skip
    full_run = time.time() - started
    rng = np.random.default_rng(20261123)
    kills, progress = 0, []
    command = _command(tiny_sd_dir, tiny_concepts, killed, cache, per_class=10)[1:]  # without the interpreter
    with ForkedCLI(env) as cli:  # each run its own process, without re-importing torch & co. each time
        while kills < 20:
            assert len(progress) < 40, f"could not place 20 kills: {progress}"
            before = _lines(killed)
            pid = cli.start(command)
            if rng.random() < 0.25:
                # During start-up (model loading, cache building): a random time, but no later than the
                # run's first record, so that a fast machine cannot turn a start-up kill into most of a run.
                deadline = time.time() + rng.uniform(0.1, 0.5) * full_run
                while time.time() < deadline and _lines(killed) == before and alive(pid):
                    time.sleep(0.005)
            else:
                target, deadline = before + 2 * int(rng.integers(1, 3)), time.time() + 10 * full_run
                while _lines(killed) < target and time.time() < deadline and alive(pid):
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, 0.02))
            if alive(pid):
                kills += 1
            cli.kill_and_wait(pid)
            progress.append(_check_consistent(killed))
    assert progress == sorted(progress), "a kill lost images that were already recorded"
    assert sum(p < 100 for p in progress) >= 15, f"too few kills interrupted the work: {progress}"

    subprocess.run(_command(tiny_sd_dir, tiny_concepts, killed, cache, per_class=10), cwd=REPO, env=env,
                   check=True, capture_output=True)  # fmt: skip
    assert _check_consistent(killed) == 100
    assert not [p for p in (killed / "images").iterdir() if ".tmp" in p.name]
    ref, got = _records(reference), _records(killed)
    assert got.keys() == ref.keys()
    for sid, record in ref.items():
        a = np.asarray(Image.open(reference / record["file_name"]), dtype=int)
        b = np.asarray(Image.open(killed / got[sid]["file_name"]), dtype=int)
        assert np.abs(a - b).max() <= 1
        assert {k: v for k, v in record.items() if k not in {"lambda", "alpha"}} == \
            {k: v for k, v in got[sid].items() if k not in {"lambda", "alpha"}}  # fmt: skip
        assert [got[sid].get(k) for k in ("lambda", "alpha")] == pytest.approx(
            [record.get(k) for k in ("lambda", "alpha")]
        )
