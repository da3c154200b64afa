"""Two-process DDP prediction on CPU (gloo): the records are split with no gap and no duplicate, caches
are built once, and the set equals a one-process run — also after one rank was SIGKILLed and the same
command was run again."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
                    "MASTER_ADDR": "127.0.0.1"}  # fmt: skip
# Long-tail subset with at most 3 images per class: 15 real images (classes of 3, 2 and 1 image, so
# Diff-II's single-image fallback runs too); expansion 3x gives 45 records, which 2 ranks cannot split
# evenly.
NUM_RECORDS = 45


def _command(tiny_sd_dir, tiny_concepts, out, cache, devices: int, port: int) -> list[str]:
    return [
        sys.executable, "expand.py", "predict", "--config", "configs/expand/diffii.yaml",
        f"--output_dir={out}", "--trainer.accelerator=cpu", f"--trainer.devices={devices}",
        *(["--trainer.strategy=ddp"] if devices > 1 else []),
        f"--model.init_args.pretrained={tiny_sd_dir}", f"--model.init_args.concepts={tiny_concepts}",
        "--model.init_args.method.num_inference_steps=6",
        "--model.init_args.method.inversion_steps=3",
        "--data.init_args.real.subset=long_tail", "--data.init_args.real.max_count=3",
        "--data.init_args.real.imbalance_factor=3", "--data.init_args.expansion_ratio=3",
        "--data.init_args.batch_size=2", f"--data.init_args.cache_dir={cache}",
        "--trainer.enable_progress_bar=false",
    ], ENV | {"MASTER_PORT": str(port)}  # fmt: skip


def _run(command_env) -> str:
    command, env = command_env
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


def _assert_same_set(reference: Path, got_folder: Path) -> None:
    ref = {r["id"]: r for r in _records(reference)}
    lines = _records(got_folder)
    got = {r["id"]: r for r in lines}
    assert len(lines) == len(got) == NUM_RECORDS, "a duplicate or missing manifest line"
    assert got.keys() == ref.keys()
    files = sorted(p.name for p in (got_folder / "images").iterdir())
    assert files == sorted(Path(r["file_name"]).name for r in ref.values()), "missing, extra or temp file"
    for sid, record in ref.items():
        a = np.asarray(Image.open(reference / record["file_name"]), dtype=int)
        b = np.asarray(Image.open(got_folder / got[sid]["file_name"]), dtype=int)
        assert np.abs(a - b).max() <= 1, sid
        for key in ("alpha", "lambda"):  # floats computed on each rank's batch
            assert abs(record[key] - got[sid][key]) < 1e-4
        same = {k: v for k, v in record.items() if k not in {"alpha", "lambda"}}
        assert same == {k: v for k, v in got[sid].items() if k not in {"alpha", "lambda"}}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command_line(process: psutil.Process) -> str:
    """A child's command line, or "" for one that has exited meanwhile (a zombie not yet reaped)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def test_two_process_ddp_equals_one_process_also_after_a_rank_is_killed(tiny_sd_dir, tiny_concepts, tmp_path):
    reference = tmp_path / "one-process"
    _run(_command(tiny_sd_dir, tiny_concepts, reference, tmp_path / "cache-1", 1, _free_port()))
    assert len(_records(reference)) == NUM_RECORDS

    # A clean two-process run: every record once, caches built once (not once per rank).
    ddp = tmp_path / "two-process"
    output = _run(_command(tiny_sd_dir, tiny_concepts, ddp, tmp_path / "cache-2", 2, _free_port()))
    for kind in ("latents", "inversions"):
        assert output.count(f"cache: built {kind}-") == 1, output[-3000:]
    _assert_same_set(reference, ddp)
    assert (ddp / "preview.png").is_file()

    # Kill rank 1 part-way; rank 0 goes down with it (Lightning's launcher ends the job); rerun.
    killed = tmp_path / "killed"
    command, env = _command(tiny_sd_dir, tiny_concepts, killed, tmp_path / "cache-3", 2, _free_port())
    main = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest, deadline, victim = killed / "metadata.jsonl", time.time() + 300, None
    while time.time() < deadline and main.poll() is None:
        ranks = psutil.Process(main.pid).children(recursive=True)
        children = [p for p in ranks if "expand.py" in _command_line(p)]
        if children and manifest.exists() and len(manifest.read_text().splitlines()) >= 4:
            victim = children[0]
            break
        time.sleep(0.02)
    assert victim is not None, "the run ended before a rank could be killed"
    victim.send_signal(signal.SIGKILL)
    try:
        main.wait(timeout=120)
    except subprocess.TimeoutExpired:  # the surviving rank did not notice: stop it like a scheduler would
        main.kill()
        main.wait()
    partial = len(_records(killed))
    assert 4 <= partial < NUM_RECORDS, partial

    _run(_command(tiny_sd_dir, tiny_concepts, killed, tmp_path / "cache-3", 2, _free_port()))
    _assert_same_set(reference, killed)
