"""A synthetic set's dataset card: `datasets` reads `label` as a ClassLabel of the class names, with every
column the records carry, also after the set is resumed or extended."""

import json
import warnings
from types import SimpleNamespace

import pytest
import torch

from callbacks.image_writer import SyntheticImageWriter
from diffexpand.manifest import CARD_NAME, read_manifest, write_dataset_card

NAMES = ["T-shirt/top", "a | b", "null", "7", "ünïcödé ☃"]  # YAML- and Markdown-hostile on purpose
TRAINER = SimpleNamespace(is_global_zero=True, strategy=SimpleNamespace(barrier=lambda *a, **k: None))


def _record(label: int, k: int, **extras) -> dict:
    seed = 1000 * label + k
    return {"label": label, "id": f"c{label:04d}_{k:05d}", "class_name": NAMES[label], "seed": seed,
            "method": "test"} | extras  # fmt: skip


def _write(folder, batches: list[list[dict]]) -> None:
    """One run of the writer over `batches`, as the predict loop drives it."""
    writer = SyntheticImageWriter(str(folder), workers=2)
    writer.on_predict_start(TRAINER, None)
    for i, records in enumerate(batches):
        images = torch.stack([torch.full((8, 8, 3), 10 * r["label"] + r["seed"] % 7, dtype=torch.uint8)
                              for r in records])  # fmt: skip
        writer.write_on_batch_end(TRAINER, None, {"images": images, "records": records}, None, None, i, 0)
    writer.on_predict_epoch_end(TRAINER, None)
    writer.on_predict_end(TRAINER, None)


def _load(folder, tmp_path):
    import datasets

    return datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "hf-cache"))


def test_a_written_set_loads_with_its_class_names_as_a_classlabel(tmp_path):
    import datasets

    out = tmp_path / "set"
    first = [_record(0, 0, **{"lambda": 0}), _record(1, 0, **{"lambda": 1}), _record(2, 0, **{"lambda": 0.5})]
    second = [_record(3, 0, energy=1.5, soft_label=[0.25, 0.75]), _record(4, 0, numerical_fallback="off")]
    _write(out, [first, second])
    ds = _load(out, tmp_path)
    label = ds.features["label"]
    assert isinstance(label, datasets.ClassLabel) and label.names == NAMES
    records = {r["id"]: r for r in read_manifest(out)}
    assert len(ds) == len(records) == 5
    for row in ds:
        record = records[row["id"]]
        assert label.int2str(row["label"]) == record["class_name"]  # labels round-trip to their names
        assert row["image"].getpixel((0, 0))[0] == 10 * record["label"] + record["seed"] % 7
    # every key any record carries is a column, typed from all lines (0 and 0.5 make a float)
    keys = {k for r in records.values() for k in r} - {"file_name"}
    assert keys | {"image"} == set(ds.features)
    assert ds.features["lambda"].dtype == "float64" and ds.features["soft_label"].feature.dtype == "float64"
    assert [row["energy"] for row in ds if row["id"].startswith("c0003")] == [1.5]

    # the packaged builder never reads a card, but takes the card's features when handed them
    cache = str(tmp_path / "hf-cache")
    card_features = datasets.load_dataset_builder(str(out), cache_dir=cache).info.features
    packaged = datasets.load_dataset(
        "imagefolder", data_dir=str(out), split="train", features=card_features, cache_dir=cache
    )
    assert packaged.features["label"].names == NAMES and sorted(packaged["id"]) == sorted(records)


def test_resuming_or_extending_a_set_rewrites_its_card(tmp_path):
    out = tmp_path / "set"
    _write(out, [[_record(0, 0), _record(1, 0)]])
    first = (out / CARD_NAME).read_text()
    assert _load(out, tmp_path).features["label"].names == NAMES[:2]
    # the next run adds a class and a key only its records carry: a stale card would drop that column
    _write(out, [[_record(2, 0, energy=2.0), _record(0, 1, energy=0.5)]])
    ds = _load(out, tmp_path / "again")
    assert (out / CARD_NAME).read_text() != first
    assert ds.features["label"].names == NAMES[:3] and len(ds) == 4
    assert sorted(e for e in ds["energy"] if e is not None) == [0.5, 2.0]
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]  # written atomically


def test_the_card_is_the_same_for_the_same_records(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    records = [_record(label, 0) for label in range(3)]
    _write(a, [records])
    _write(b, [records[:1], records[1:]])  # other batches, same set
    assert (a / CARD_NAME).read_text() == (b / CARD_NAME).read_text()
    text = (a / CARD_NAME).read_text()
    assert "| 1 | a \\| b | 1 |" in text  # a class name cannot break the table


def test_a_readme_the_writer_did_not_write_is_left_alone(tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    (out / CARD_NAME).write_text("# my notes\n")
    with pytest.warns(UserWarning, match="not written by diffexpand"):
        _write(out, [[_record(0, 0)]])
    assert (out / CARD_NAME).read_text() == "# my notes\n"


def test_metadata_without_consistent_types_gets_no_stale_card(tmp_path):
    out = tmp_path / "set"
    _write(out, [[_record(0, 0, score=0.5)]])
    assert (out / CARD_NAME).exists()
    with (out / "metadata.jsonl").open("a") as fh:  # a record whose `score` is text, not a number
        fh.write(json.dumps({"file_name": "images/c0000_00000.png"} | _record(0, 1, score="high")) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert write_dataset_card(out) is None
    assert not (out / CARD_NAME).exists() and "no consistent column types" in str(caught[-1].message)


def test_expand_writes_a_card_with_the_class_names(tiny_sd_dir, tmp_path):
    import datasets

    import expand

    out = tmp_path / "synthetic"
    expand.cli_main([
        "predict", "--config", "configs/expand/txt2img.yaml", f"--model.init_args.pretrained={tiny_sd_dir}",
        "--model.init_args.method.num_inference_steps=2", f"--output_dir={out}", "--data.init_args.real=null",
        f"--data.init_args.class_names={json.dumps(NAMES[:3])}", "--data.init_args.images_per_class=2",
        "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu",
    ])  # fmt: skip
    ds = _load(out, tmp_path)
    assert isinstance(ds.features["label"], datasets.ClassLabel) and ds.features["label"].names == NAMES[:3]
    assert ds.features["label"].int2str(ds["label"]) == ds["class_name"] and len(ds) == 6
