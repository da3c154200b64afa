"""The expansion pipeline end to end on the tiny stack: planning, caches, writer, reruns."""

import json

import pytest
import torch

import expand

REAL = ["--data.init_args.real.dataset=fashion_mnist", "--data.init_args.real.shots=2"]


def _run(tiny_sd_dir, out, method, *extra, concepts=None, cache=None):
    args = [
        "predict", "--config", f"configs/expand/{method}.yaml", f"--model.init_args.pretrained={tiny_sd_dir}",
        "--model.init_args.method.num_inference_steps=3", f"--output_dir={out}",
        *(["--model.init_args.method.inversion_steps=3"] if method == "diffii" else []),
        "--data.init_args.class_names=null", "--data.init_args.images_per_class=2", *REAL,
    ]  # fmt: skip
    if concepts:
        args.append(f"--model.init_args.concepts={concepts}")
    if cache:
        args.append(f"--data.init_args.cache_dir={cache}")
    expand.cli_main(args + list(extra))
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


def test_batch_size_does_not_change_files_or_records_under_bf16(tiny_sd_dir, tiny_concepts, tmp_path):
    """Diff-II under bf16 autocast: the UNet's bf16 kernels are batch-invariant, the VAE runs in float32
    (float32 runs are checked for every method by tests/test_method_contract.py)."""
    autocast = "bf16"
    import numpy as np
    from PIL import Image

    outs = {}
    for bs in (1, 8):
        outs[bs] = _run(tiny_sd_dir, tmp_path / f"bs{bs}", "diffii", f"--data.init_args.batch_size={bs}",
                        f"--model.init_args.autocast={autocast}", concepts=tiny_concepts,
                        cache=tmp_path / "cache")  # fmt: skip
    by_id = {bs: {r["id"]: r for r in recs} for bs, recs in outs.items()}
    assert by_id[1].keys() == by_id[8].keys()
    differing = 0
    for sid, record in by_id[1].items():
        other = by_id[8][sid]
        assert {k: v for k, v in record.items() if k not in {"lambda", "alpha"}} == \
            {k: v for k, v in other.items() if k not in {"lambda", "alpha"}}  # fmt: skip
        assert record["lambda"] == pytest.approx(other["lambda"], rel=1e-5)
        a = np.asarray(Image.open(tmp_path / "bs1" / record["file_name"]), dtype=int)
        b = np.asarray(Image.open(tmp_path / "bs8" / other["file_name"]), dtype=int)
        assert np.abs(a - b).max() <= 1
        differing += int((a != b).sum())
    print(f"{autocast}: pixels differing between batch sizes 1 and 8: {differing}")


def test_caches_are_reused_across_runs(tiny_sd_dir, tiny_concepts, tmp_path, monkeypatch):
    _run(tiny_sd_dir, tmp_path / "a", "diffii", concepts=tiny_concepts, cache=tmp_path / "cache")
    import diffexpand.methods.diffii as diffii

    def fail(*_, **__):
        raise AssertionError("inversions were recomputed")

    monkeypatch.setattr(diffii, "invert_latents", fail)
    # a different split ratio must reuse the inversion pool
    _run(tiny_sd_dir, tmp_path / "b", "diffii", "--model.init_args.method.split_ratio=0.7",
         concepts=tiny_concepts, cache=tmp_path / "cache")  # fmt: skip


def test_methods_with_tokens_need_a_concept_folder(tiny_sd_dir, tmp_path):
    with pytest.raises(ValueError, match="uses learned concept tokens.*configs/concept.yaml"):
        _run(tiny_sd_dir, tmp_path / "out", "diffii", "--model.init_args.concepts=null")
    with pytest.raises(ValueError, match="does not exist yet"):  # jsonargparse wraps the error
        _run(tiny_sd_dir, tmp_path / "out", "diffii", concepts=tmp_path / "missing")


def test_output_reads_as_hf_imagefolder_with_labels(tiny_sd_dir, tiny_concepts, tmp_path):
    import datasets

    records = _run(tiny_sd_dir, tmp_path / "out", "dafusion", concepts=tiny_concepts, cache=tmp_path / "c")
    ds = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "out"), split="train")
    assert sorted(ds["label"]) == sorted(r["label"] for r in records)
    assert len(ds) == len(records) and torch.tensor(ds["strength"]).max() <= 1.0


def test_a_folder_made_with_other_settings_is_refused(tiny_sd_dir, tiny_concepts, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    _run(tiny_sd_dir, out, "real_guidance", cache=cache)
    # growing the set is fine; changing how it is made is not (a resume would mix two sets)
    _run(tiny_sd_dir, out, "real_guidance", "--data.init_args.images_per_class=3", cache=cache)
    with pytest.raises(ValueError, match=r"other settings \(method_settings differ\)"):
        _run(tiny_sd_dir, out, "real_guidance", "--model.init_args.method.strengths=[0.3]", cache=cache)
