"""A cache entry on disk is never trusted: one that cannot be read, has other keys or shapes, or holds
NaN is named in one warning and built again (under the lock, replacing the file), and a run over such a
cache makes the same images as a run over a healthy one."""

import errno
import json
import re
import warnings

import numpy as np
import pytest
import torch
from model_service import CpuModelService
from PIL import Image
from safetensors.torch import load_file, save

import expand
from diffexpand import cache
from diffexpand.cache import cached_json, cached_tensors, strings
from diffexpand.methods.common import PlanContext
from diffexpand.methods.inputs import RealImages, Workspace, real_latents

EXPECT = {"latents": (5, 4, None)}  # 5 images, 4 channels, a free last axis


class Builder:
    """A builder that counts its calls and returns a different (valid) entry each time."""

    def __init__(self, make):
        self.make, self.calls = make, 0

    def __call__(self):
        self.calls += 1
        return self.make(self.calls)


def latents_builder() -> Builder:
    return Builder(lambda n: {"latents": torch.full((5, 4, 3), float(n))})


def _nan(_: bytes) -> bytes:
    return save({"latents": torch.full((5, 4, 3), float("nan"))})


UNREADABLE = "unreadable: truncated or not a safetensors file"
BAD_TENSOR_FILES = {  # case: (what is written over a valid entry, the reason the warning gives)
    "truncated": (lambda valid: valid[:-7], UNREADABLE),
    "garbage": (lambda _: b"\x89 not a tensor file \x00" * 40, UNREADABLE),
    "empty": (lambda _: b"", UNREADABLE),
    "wrong key": (lambda _: save({"latent": torch.zeros(5, 4, 3)}), "key 'latents' missing"),
    "extra key": (
        lambda _: save({"latents": torch.zeros(5, 4, 3), "x": torch.zeros(1)}),
        r"unexpected key\(s\) \['x'\]",
    ),
    "wrong shape": (
        lambda _: save({"latents": torch.zeros(5, 3, 3)}),
        r"'latents' has shape \(5, 3, 3\), expected \(5, 4, \*\)",
    ),
    "short count": (
        lambda _: save({"latents": torch.zeros(3, 4, 3)}),
        r"'latents' has shape \(3, 4, 3\), expected \(5, 4, \*\)",
    ),
    "nan": (_nan, r"\['latents'\] hold NaN or Inf"),
}


def _caught(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call()
    return value, [str(w.message) for w in caught]


@pytest.mark.parametrize("case", list(BAD_TENSOR_FILES))
def test_a_bad_tensor_entry_is_named_once_and_rebuilt(tmp_path, case):
    corrupt, reason = BAD_TENSOR_FILES[case]
    build = latents_builder()
    first = cached_tensors(tmp_path, "latents", "k", build, EXPECT)
    path = tmp_path / "latents-k.safetensors"
    path.write_bytes(corrupt(path.read_bytes()))

    got, messages = _caught(lambda: cached_tensors(tmp_path, "latents", "k", build, EXPECT))

    assert len(messages) == 1, messages
    assert str(path) in messages[0] and "built again" in messages[0]
    assert re.search(reason, messages[0]), messages[0]
    assert build.calls == 2 and torch.equal(got["latents"], torch.full((5, 4, 3), 2.0))
    assert not torch.equal(got["latents"], first["latents"])
    on_disk = load_file(path)  # replaced by the fresh entry
    assert on_disk.keys() == {"latents"} and torch.equal(on_disk["latents"], got["latents"])
    again, messages = _caught(lambda: cached_tensors(tmp_path, "latents", "k", build, EXPECT))
    assert messages == [] and build.calls == 2 and torch.equal(again["latents"], got["latents"])


def test_a_valid_entry_is_loaded_without_building(tmp_path):
    build = latents_builder()
    cached_tensors(tmp_path, "latents", "k", build, EXPECT)
    got, messages = _caught(lambda: cached_tensors(tmp_path, "latents", "k", build, EXPECT))
    assert build.calls == 1 and messages == [] and torch.equal(got["latents"], torch.ones(5, 4, 3))


def test_without_expectation_an_unreadable_or_nan_entry_is_still_rebuilt(tmp_path):
    build = latents_builder()
    cached_tensors(tmp_path, "latents", "k", build)
    path = tmp_path / "latents-k.safetensors"
    path.write_bytes(_nan(b""))
    got, messages = _caught(lambda: cached_tensors(tmp_path, "latents", "k", build))
    assert len(messages) == 1 and str(path) in messages[0] and "NaN" in messages[0]
    assert build.calls == 2 and bool(got["latents"].isfinite().all())


def test_an_entry_another_process_repaired_while_we_waited_is_not_rebuilt(tmp_path, monkeypatch):
    """The process that finds a bad entry re-checks it under the lock: another one may have just
    rebuilt it (then there is nothing to warn about and nothing to build)."""
    path = tmp_path / "latents-k.safetensors"
    path.write_bytes(b"garbage")
    repaired = {"latents": torch.full((5, 4, 3), 7.0)}

    class RepairedWhileWaiting:  # the lock is granted once the other process has written its entry
        def __init__(self, _):
            pass

        def acquire(self):
            path.write_bytes(save(repaired))

        def release(self):
            pass

    monkeypatch.setattr(cache, "FileLock", RepairedWhileWaiting)
    build = latents_builder()
    got, messages = _caught(lambda: cached_tensors(tmp_path, "latents", "k", build, EXPECT))
    assert build.calls == 0 and messages == [] and torch.equal(got["latents"], repaired["latents"])


def test_a_builder_that_disagrees_with_its_expectation_caches_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"'latents' has shape \(2, 4, 3\), expected \(5, 4, \*\).*a bug"):
        cached_tensors(tmp_path, "latents", "k", lambda: {"latents": torch.zeros(2, 4, 3)}, EXPECT)
    assert not (tmp_path / "latents-k.safetensors").exists()


def test_a_cache_folder_that_cannot_be_locked_is_named_with_what_to_do(tmp_path, monkeypatch):
    path = tmp_path / "latents-k.safetensors"
    path.write_bytes(b"garbage")

    class ReadOnly:
        def __init__(self, _):
            pass

        def acquire(self):
            raise PermissionError(errno.EACCES, "Permission denied", str(path) + ".lock")

    monkeypatch.setattr(cache, "FileLock", ReadOnly)
    with pytest.raises(
        OSError, match=f"cache folder {tmp_path} .*Permission denied.*data.init_args.cache_dir"
    ):
        cached_tensors(tmp_path, "latents", "k", latents_builder(), EXPECT)


BAD_JSON_FILES = {
    "garbage": (b"\xff\xfe not json", "unreadable: truncated or not a JSON file"),
    "truncated": (b'["on the grass", "at ni', "unreadable: truncated or not a JSON file"),
    "empty": (b"", "unreadable: truncated or not a JSON file"),
    "wrong structure": (b'{"suffixes": ["on the grass"]}', "not a list of non-empty strings"),
    "not strings": (b'["on the grass", 3]', "not a list of non-empty strings"),
    "too many": (b'["a", "b", "c"]', "holds 3 strings, expected 1 to 2"),
    "none": (b"[]", "holds 0 strings, expected 1 to 2"),
}


@pytest.mark.parametrize("case", list(BAD_JSON_FILES))
def test_a_bad_json_entry_is_named_once_and_rebuilt(tmp_path, case):
    content, reason = BAD_JSON_FILES[case]
    build = Builder(lambda n: ["on the grass", f"at night {n}"])
    cached_json(tmp_path, "suffixes", "k", build, strings(2))
    path = tmp_path / "suffixes-k.json"
    path.write_bytes(content)

    got, messages = _caught(lambda: cached_json(tmp_path, "suffixes", "k", build, strings(2)))

    assert len(messages) == 1 and str(path) in messages[0] and reason in messages[0], messages
    assert build.calls == 2 and got == ["on the grass", "at night 2"]
    assert json.loads(path.read_text()) == got
    again, messages = _caught(lambda: cached_json(tmp_path, "suffixes", "k", build, strings(2)))
    assert messages == [] and build.calls == 2 and again == got


def test_latents_of_another_image_size_are_rebuilt(tiny_sd, tmp_path):
    ids = ["a", "b"]
    pixels = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    real = RealImages(ids, lambda: pixels, lambda: [], ["tiny", 32], image_size=32)
    ctx = PlanContext(["a"], ["shoe"], [ids], ["a"], ["a"])
    ws = Workspace(ctx, real, CpuModelService(tiny_sd), tmp_path, batch_size=2, seed=0)
    healthy = real_latents(ws, "test")
    (path,) = tmp_path.glob("latents-*.safetensors")
    path.write_bytes(save({"latents": torch.zeros(2, 4, 7, 7)}))  # what 28-pixel images would give

    got, messages = _caught(lambda: real_latents(ws, "test"))

    assert len(messages) == 1 and str(path) in messages[0], messages
    assert "'latents' has shape (2, 4, 7, 7), expected (2, 4, 8, 8)" in messages[0]
    assert all(torch.equal(got[i], healthy[i]) for i in ids)


# ---- end to end: a run over a broken cache makes the images of a run over a healthy one ------------

DIFFII = [
    "predict", "--config", "configs/expand/diffii.yaml", "--model.init_args.method.num_inference_steps=2",
    "--model.init_args.method.inversion_steps=2", "--data.init_args.real.shots=2",
    "--data.init_args.images_per_class=1", "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu",
]  # fmt: skip
DISTDIFF = [
    "predict", "--config", "configs/expand/distdiff.yaml", "--trainer.accelerator=cpu",
    "--model.init_args.method.num_inference_steps=6", "--model.init_args.method.guidance_steps=3",
    "--model.init_args.method.extractor=oracle", "--data.init_args.real.shots=2",
    "--data.init_args.images_per_class=1", "--trainer.enable_progress_bar=false",
]  # fmt: skip


QUIET = ["--trainer.logger=false", "--trainer.callbacks=null"]  # no W&B run, no set metrics: not tested here


def _expand(args, out, cache_dir) -> tuple[dict, list[str]]:
    """Run an expansion into `out`: its records by id, and the cache warnings it gave."""
    run = [*args, *QUIET, f"--output_dir={out}", f"--data.init_args.cache_dir={cache_dir}"]
    _, messages = _caught(lambda: expand.cli_main(run))
    records = {r["id"]: r for r in map(json.loads, (out / "metadata.jsonl").read_text().splitlines())}
    return records, [m for m in messages if m.startswith("cache entry")]


def _same_images(folder_a, records_a, folder_b, records_b) -> None:
    assert records_a.keys() == records_b.keys() and records_a
    for sid, record in records_a.items():
        a = np.asarray(Image.open(folder_a / record["file_name"]))
        b = np.asarray(Image.open(folder_b / records_b[sid]["file_name"]))
        assert np.array_equal(a, b), sid


def _entry(cache_dir, kind):
    (path,) = cache_dir.glob(f"{kind}-*.safetensors")
    return path


def test_diffii_over_nan_latents_and_truncated_inversions(tiny_sd_dir, tiny_concepts, tmp_path):
    cache_dir = tmp_path / "cache"
    args = [
        *DIFFII,
        f"--model.init_args.pretrained={tiny_sd_dir}",
        f"--model.init_args.concepts={tiny_concepts}",
    ]
    healthy, messages = _expand(args, tmp_path / "healthy", cache_dir)
    assert messages == []
    latents, inversions = _entry(cache_dir, "latents"), _entry(cache_dir, "inversions")
    held = load_file(latents)["latents"].clone()  # load_file maps the file we overwrite
    latents.write_bytes(save({"latents": torch.full_like(held, float("nan"))}))
    inversions.write_bytes(inversions.read_bytes()[:-100])

    got, messages = _expand(args, tmp_path / "again", cache_dir)

    assert len(messages) == 2, messages
    assert str(latents) in messages[0] and "hold NaN or Inf" in messages[0]
    assert str(inversions) in messages[1] and "truncated" in messages[1]
    _same_images(tmp_path / "healthy", healthy, tmp_path / "again", got)
    assert torch.equal(load_file(latents)["latents"], held)


def test_distdiff_over_garbage_features_and_misshapen_prototypes(tiny_sd_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    args = [*DISTDIFF, f"--model.init_args.pretrained={tiny_sd_dir}"]
    healthy, messages = _expand(args, tmp_path / "healthy", cache_dir)
    assert messages == []
    features, prototypes = _entry(cache_dir, "features"), _entry(cache_dir, "prototypes")
    features.write_bytes(b"garbage" * 10)
    held = load_file(prototypes)
    prototypes.write_bytes(save({"classes": held["classes"], "groups": held["groups"][:, :1].contiguous()}))

    got, messages = _expand(args, tmp_path / "again", cache_dir)

    assert len(messages) == 2, messages
    assert str(features) in messages[0] and "not a safetensors file" in messages[0]
    assert str(prototypes) in messages[1] and "'groups' has shape" in messages[1]
    _same_images(tmp_path / "healthy", healthy, tmp_path / "again", got)
