"""Two `expand.py predict` processes into one --output_dir: the second is refused while the first runs,
naming it, and the set never holds an image twice."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from filelock import FileLock

from diffexpand import run_lock
from diffexpand.run_lock import (
    HOLDER_NAME,
    LOCK_NAME,
    OutputFolderBusyError,
    OutputFolderLock,
    launching_rank,
)

REPO = Path(__file__).resolve().parents[1]
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
NUM_IMAGES = 20  # 2 per class


def _command(tiny_sd_dir, tiny_concepts, out, cache) -> list[str]:
    return [
        sys.executable, "expand.py", "predict", "--config", "configs/expand/diffii.yaml",
        f"--output_dir={out}", "--trainer.accelerator=cpu", f"--model.init_args.pretrained={tiny_sd_dir}",
        f"--model.init_args.concepts={tiny_concepts}", "--model.init_args.method.num_inference_steps=3",
        "--model.init_args.method.inversion_steps=3", "--data.init_args.real.shots=2",
        "--data.init_args.images_per_class=2", "--data.init_args.batch_size=2",
        f"--data.init_args.cache_dir={cache}", "--trainer.enable_progress_bar=false",
    ]  # fmt: skip


def _manifest_ids(folder: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (folder / "metadata.jsonl").read_text().splitlines()]


def _hold_in_another_process(folder: Path) -> subprocess.Popen:
    """A process that holds `folder` the way a running expansion does, until it is killed."""
    script = (
        "import time\nfrom diffexpand.run_lock import OutputFolderLock\n"
        f"held = OutputFolderLock({str(folder)!r}).__enter__()\ntime.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    deadline = time.time() + 60
    while not (folder / HOLDER_NAME).exists() and time.time() < deadline:
        time.sleep(0.05)
    assert holder.poll() is None, "the holder ended before it held the folder"
    return holder


def test_a_second_run_into_a_busy_folder_is_refused_naming_the_first(tiny_sd_dir, tiny_concepts, tmp_path):
    out, cache = tmp_path / "set", tmp_path / "cache"
    holder = _hold_in_another_process(out)
    try:
        second = subprocess.run(_command(tiny_sd_dir, tiny_concepts, out, cache), cwd=REPO, env=ENV,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 1, second.stderr[-3000:]
    message = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1, second.stderr[-3000:]
    assert f"process {holder.pid}" in message[0] and "--output_dir" in message[0]
    assert "Traceback" not in second.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([HOLDER_NAME, ".diffexpand-run.lock"])
    assert not cache.exists(), "the refused run built caches"


def test_two_runs_started_together_write_each_image_once(tiny_sd_dir, tiny_concepts, tmp_path):
    out, cache = tmp_path / "set", tmp_path / "cache"
    runs = [
        subprocess.Popen(
            _command(tiny_sd_dir, tiny_concepts, out, cache),
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    results = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    # Either the second was refused while the first ran, or it started after the first ended and
    # found nothing left to do; never both writing.
    assert sorted(rc for rc, _ in results) in ([0, 0], [0, 1]), [err[-2000:] for _, err in results]
    for rc, err in results:
        if rc == 1:
            assert "is being written by process" in err
    ids = _manifest_ids(out)
    assert len(ids) == len(set(ids)) == NUM_IMAGES


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    """The OS drops the lock with its process: a SIGKILLed run does not block the next one."""
    holder = _hold_in_another_process(tmp_path)
    with pytest.raises(OutputFolderBusyError, match=f"process {holder.pid}"):
        OutputFolderLock(tmp_path).__enter__()
    holder.kill()
    holder.wait()
    with OutputFolderLock(tmp_path):  # free again, although the holder never released it
        assert json.loads((tmp_path / HOLDER_NAME).read_text())["pid"] == os.getpid()


@pytest.mark.parametrize(
    "env, launches",
    [({}, True), ({"LOCAL_RANK": "0"}, True), ({"LOCAL_RANK": "1"}, False), ({"RANK": "3"}, False),
     ({"SLURM_PROCID": "2"}, False)],
)  # fmt: skip
def test_only_the_launching_process_takes_the_lock(monkeypatch, env, launches):
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert launching_rank() is launches


def _note(pid: int) -> bytes:
    return (json.dumps({"pid": pid, "host": "h", "started": "s", "command": "c"}) + "\n").encode()


def test_a_run_refused_before_the_holder_wrote_its_note_still_names_the_holder(tmp_path):
    """The holder writes its note a moment after taking the lock; a run looking in between waits for it."""
    with FileLock(str(tmp_path / LOCK_NAME), timeout=0):  # held, no note yet
        late_note = threading.Timer(0.5, lambda: (tmp_path / HOLDER_NAME).write_bytes(_note(4242)))
        late_note.start()
        try:
            with pytest.raises(OutputFolderBusyError, match="process 4242 on h"):
                OutputFolderLock(tmp_path).__enter__()
        finally:
            late_note.join()


def test_a_holder_that_never_writes_its_note_is_named_another_process(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "NOTE_WAIT_S", 0.2)
    with FileLock(str(tmp_path / LOCK_NAME), timeout=0):
        (tmp_path / HOLDER_NAME).write_text("{not json")
        with pytest.raises(OutputFolderBusyError, match="being written by another process"):
            OutputFolderLock(tmp_path).__enter__()
