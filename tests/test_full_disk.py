"""A full disk mid-expansion ends with a clear error and no partial file; the same command, once there
is space, completes the set with no duplicate."""

import errno
import json
import os

import pytest
from PIL import Image

import expand

ARGS = ["predict", "--config", "configs/expand/txt2img.yaml",
        "--model.init_args.method.num_inference_steps=2", "--data.init_args.real=null",
        "--data.init_args.class_names=[a,b,c,d]", "--data.init_args.images_per_class=5",
        "--data.init_args.batch_size=2", "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu"]  # fmt: skip


def test_full_disk_stops_cleanly_and_a_rerun_completes(tiny_sd_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = [*ARGS, f"--model.init_args.pretrained={tiny_sd_dir}", f"--output_dir={out}"]
    real_fsync, calls = os.fsync, []

    def fsync_until_full(fd):
        calls.append(fd)
        if len(calls) > 9:  # the disk fills up after a few files
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_until_full)
    with pytest.raises(OSError, match="no space left on the device while writing"):
        expand.cli_main(args)
    monkeypatch.setattr(os, "fsync", real_fsync)

    leftovers = [p.name for p in (out / "images").iterdir() if not p.name.endswith(".png")]
    assert leftovers == []  # no temporary or partial file
    for p in (out / "images").iterdir():
        Image.open(p).load()  # every file on disk is a complete image
    lines = (out / "metadata.jsonl").read_text().splitlines() if (out / "metadata.jsonl").exists() else []
    assert len(lines) < 20
    for record in map(json.loads, lines):
        assert (out / record["file_name"]).is_file()

    expand.cli_main(args)
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(records) == len({r["id"] for r in records}) == 20
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(r["file_name"][7:] for r in records)


def test_a_full_disk_while_caching_leaves_no_entry_and_says_so(tmp_path, monkeypatch):
    import torch

    from diffexpand.cache import cached_json, cached_tensors

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="no space left on the device while writing .*latents-k.safetensors"):
        cached_tensors(tmp_path, "latents", "k", lambda: {"x": torch.ones(4)})
    with pytest.raises(OSError, match="no space left on the device while writing .*suffixes-k.json"):
        cached_json(tmp_path, "suffixes", "k", lambda: ["a photo"])
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == []
