"""Classifier training on real + synthetic data: mixing, soft targets, split hygiene, metrics, and an
end-to-end `train.py fit` whose W&B offline run holds the test accuracy and the resolved config."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.classification import ClassificationDataModule, EpochSampler, TrainSet
from diffexpand.classification.metrics import group_accuracy, per_class_accuracy, shot_splits, split_accuracy
from diffexpand.classification.mixing import replacement, soft_target
from diffexpand.classification.synthetic import SyntheticSet
from diffexpand.data.readers import LabeledImages
from diffexpand.manifest import append_manifest
from lightning_modules.classifier import soft_cross_entropy

REPO = Path(__file__).resolve().parents[1]


def _real(n_per_class=4, classes=3) -> LabeledImages:
    labels = np.repeat(np.arange(classes), n_per_class)
    return LabeledImages("toy", [f"c{c}" for c in range(classes)], ["thing"] * classes, labels,
                         [f"train/{i}" for i in range(len(labels))],
                         lambda i: Image.new("RGB", (8, 8), (0, 0, 0)))  # fmt: skip


def _synthetic(folder: Path, per_class=3, classes=3, soft=False) -> Path:
    records = []
    for c in range(classes):
        for k in range(per_class):
            name = f"images/s{c}_{k}.png"
            (folder / "images").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (255, 255, 255)).save(folder / name)
            record = {"file_name": name, "label": c, "id": f"s{c}_{k}"}
            if soft:
                record["soft_label"] = [0.3 if j == (c + 1) % classes else 0.0 for j in range(classes)]
                record["soft_label"][c] = 0.7
            records.append(record)
    append_manifest(folder, records)
    return folder


def test_replacement_respects_p_and_stays_within_the_class(tmp_path):
    real = _real()
    syn = SyntheticSet.read(_synthetic(tmp_path / "syn"), 3)
    ds = TrainSet(
        real, np.arange(len(real)), [syn], "replace", 0.3, seed=1, size=8, num_classes=3, augment=False
    )
    replaced, total = 0, 0
    for epoch in range(200):
        for i in range(len(ds)):
            item = ds[(i, epoch)]
            assert item["label"] == int(real.labels[i])  # never another class
            replaced += item["source"] >= 0
            total += 1
    # binomial(2400, 0.3): sd = 22.4; 4 sd either side
    assert abs(replaced - 0.3 * total) < 4 * np.sqrt(total * 0.3 * 0.7)
    draws = [replacement(1, e, 0, 0.3, 9) for e in range(50)]
    assert draws == [replacement(1, e, 0, 0.3, 9) for e in range(50)]  # a pure function of (seed, epoch, i)
    assert len({d for d in draws if d is not None}) > 1  # fresh each epoch
    assert replacement(1, 0, 0, 0.0, 9) is None and replacement(1, 0, 0, 1.0, 0) is None


def test_augmentation_is_a_pure_function_of_seed_epoch_and_index():
    pixels = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    real = LabeledImages(
        "toy", ["a"], ["thing"], np.zeros(2, int), ["0", "1"], lambda i: Image.fromarray(pixels)
    )
    ds = TrainSet(real, np.arange(2), [], "replace", 0.0, seed=3, size=32, num_classes=1, augment=True)
    torch.manual_seed(0)
    first = [ds[(0, e)]["pixel_values"] for e in range(8)]
    torch.manual_seed(1)  # the global generator does not matter, and is left as it was
    state = torch.get_rng_state()
    again = [ds[(0, e)]["pixel_values"] for e in range(8)]
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert len({tuple(x.flatten()[:64].tolist()) for x in first}) > 1  # fresh crops / flips each epoch


def test_epoch_sampler_pairs_indices_with_the_epoch_and_splits_ranks():
    ranks = [EpochSampler(range(10), num_replicas=2, rank=r, shuffle=True, seed=0) for r in range(2)]
    for s in ranks:
        s.set_epoch(3)
    items = [list(s) for s in ranks]
    assert all(e == 3 for part in items for _, e in part)
    assert sorted(i for part in items for i, _ in part) == list(range(10))


def test_soft_labels_sum_to_one_and_concat_mixing_joins_the_sets(tmp_path):
    real = _real()
    syn = SyntheticSet.read(_synthetic(tmp_path / "syn", soft=True), 3)
    ds = TrainSet(
        real, np.arange(len(real)), [syn], "concat", 0.0, seed=0, size=8, num_classes=3, augment=True
    )
    assert len(ds) == len(real) + len(syn)
    for i in range(len(ds)):
        item = ds[i]
        assert torch.isclose(item["target"].sum(), torch.tensor(1.0))
        assert item["target"].argmax() == item["label"]
    assert ds[len(real)]["target"].tolist() == pytest.approx([0.7, 0.3, 0.0])
    with pytest.raises(ValueError, match="does not sum"):
        soft_target(0, 3, [0.0, 0.0, 0.0])


def test_soft_labels_false_trains_on_the_class_label_alone(tmp_path):
    real = _real()
    syn = SyntheticSet.read(_synthetic(tmp_path / "syn", soft=True), 3)
    args = dict(seed=0, size=8, num_classes=3, augment=False)
    soft = TrainSet(real, np.arange(len(real)), [syn], "concat", 0.0, **args)
    hard = TrainSet(real, np.arange(len(real)), [syn], "concat", 0.0, **args, soft_labels=False)
    for i in range(len(real), len(hard)):  # the synthetic items: same image and class, one-hot target
        assert hard[i]["label"] == soft[i]["label"]
        assert torch.equal(hard[i]["pixel_values"], soft[i]["pixel_values"])
        assert hard[i]["target"].tolist() == torch.eye(3)[hard[i]["label"]].tolist()
        assert soft[i]["target"].max() == pytest.approx(0.7)
    with pytest.raises(ValueError, match="soft_labels must be true or false"):
        ClassificationDataModule(soft_labels="no")


def test_soft_cross_entropy_matches_torch_for_hard_targets():
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 3, 0])
    targets = torch.nn.functional.one_hot(labels, 4).float()
    expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    assert torch.allclose(soft_cross_entropy(logits, targets, 0.1), expected, atol=1e-6)


def test_long_tail_and_group_metrics():
    splits = shot_splits([500, 150, 60, 30, 10, 5])
    assert splits == {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}
    preds, labels = torch.tensor([0, 0, 1, 2, 5, 4]), torch.tensor([0, 1, 1, 2, 4, 4])
    per_class = per_class_accuracy(preds, labels, 6)
    assert per_class[:3].tolist() == [1.0, 0.5, 1.0] and per_class[4] == 0.5 and per_class[3].isnan()
    assert split_accuracy(per_class, splits) == {"many": 0.75, "medium": 1.0, "few": 0.5}
    groups = torch.tensor([0, 1, 1, 2, 3, 3])
    acc = group_accuracy(preds, labels, groups)
    assert acc["group_1"] == 0.5 and acc["worst_group"] == 0.5


def test_test_split_is_disjoint_from_everything_trained_on(tiny_sd_dir, tmp_path):
    dm = ClassificationDataModule(real={"dataset": "fashion_mnist", "shots": 5, "seed": 0}, synthetic=[])
    dm.setup("fit")
    train_ids = {dm.train_set.real.ids[int(j)] for j in dm.train_set.indices}
    test_ids = set(dm.test_set.data.ids)
    assert len(train_ids) == 50 and len(test_ids) == 10_000 and not train_ids & test_ids
    # the expander reads the same subset: its synthetic images come from training ids only
    import expand

    out = tmp_path / "syn"
    expand.cli_main([
        "predict", "--config", str(REPO / "configs/expand/real_guidance.yaml"), f"--output_dir={out}",
        "--trainer.accelerator=cpu", f"--model.init_args.pretrained={tiny_sd_dir}",
        "--model.init_args.method.num_inference_steps=2", "--data.init_args.images_per_class=1",
        f"--data.init_args.cache_dir={tmp_path / 'cache'}",
    ])  # fmt: skip
    sources = {
        s for r in map(json.loads, (out / "metadata.jsonl").read_text().splitlines()) for s in r["source_ids"]
    }
    assert sources <= train_ids


def test_train_fit_writes_a_wandb_run_where_wandb_sync_finds_it(tmp_path, monkeypatch, capsys):
    """The default recipe, run from a fresh directory: the offline run lands in ./wandb (what `wandb
    sync` with no path uploads) and says so; checkpoints and config.yaml stay in default_root_dir. The
    run holds the resolved config once, typed; per-class plots with class names; the set's figures and
    how many of its images the set filter kept."""
    from wandb_runs import read_run, table

    import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_DIR")  # conftest's: here the user's case, no WANDB_DIR
    syn = _synthetic(tmp_path / "syn", per_class=2, classes=10)
    (syn / "set_metrics.json").write_text(json.dumps({
        "images": 20, "oracle": {"faithfulness": 0.85, "diversity": 0.4, "images": 20, "per_class": {}},
    }))  # fmt: skip
    train.cli_main([
        "fit", "--config", str(REPO / "configs/classifier.yaml"), "--trainer.max_epochs=2",
        "--trainer.check_val_every_n_epoch=1", "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=2", "--model.init_args.backbone=resnet10t",
        f"--data.init_args.synthetic=[{syn}]", "--data.init_args.real.shots=2", "--data.init_args.p=0.25",
        "--data.init_args.synthetic_filter={kind: probe_agree, extractor: oracle}",
    ])  # fmt: skip
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    printed = capsys.readouterr().out
    assert "wandb sync" in printed and run_dir.name in printed  # how to upload it, said at the end
    assert (tmp_path / "runs/classifier/checkpoints/last.ckpt").is_file()  # resume layout unchanged
    assert (tmp_path / "runs/classifier/config.yaml").is_file() and not (tmp_path / "config.yaml").exists()
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SILENT"}  # it would hide the listing
    found = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert (
        "Would sync 1 run" in found.stderr and f"run-{run_dir.name.rsplit('-', 1)[1]}.wandb" in found.stderr
    )

    run = read_run(run_dir)
    config, summary = run["config"], run["summary"]
    assert config["data.init_args.p"] == 0.25 and config["data.init_args.real.shots"] == 2  # typed
    assert config["model.init_args.backbone"] == "resnet10t"
    assert config["data.class_path"] == "datamodules.classification.ClassificationDataModule"
    hparams = ("p", "backbone", "lr", "mixing", "label_smoothing", "image_size", "synthetic")
    for name in hparams:  # each setting once: no bare copy from the modules' own hyper-parameters
        assert name not in config and len([k for k in config if k.endswith(f".init_args.{name}")]) == 1
    assert "real" not in config and "shots" not in config
    assert "test/acc" in summary and "test/mean_class_acc" in summary and "val/acc_best" in summary
    assert summary["synthetic/syn/faithfulness"] == 0.85 and summary["synthetic/syn/diversity"] == 0.4
    # the filter (identical white images: one class agrees, every other keeps one image) and what it kept
    filter_config = {k: v for k, v in config.items() if k.startswith("data.init_args.synthetic_filter")}
    assert filter_config == {
        "data.init_args.synthetic_filter.kind": "probe_agree",
        "data.init_args.synthetic_filter.extractor": "oracle",
    }
    assert summary["synthetic/syn/images"] == 20 and summary["synthetic/syn/kept_images"] == 11

    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"]  # fmt: skip
    per_class = table(run_dir, summary, "test/per_class_acc")
    assert per_class["columns"][:2] == ["class", "accuracy"]
    assert {row[0] for row in per_class["data"]} <= set(names) and len(per_class["data"]) >= 2
    assert all(0.0 <= row[1] <= 1.0 for row in per_class["data"])
    confusion = table(run_dir, summary, "test/confusion_matrix")
    assert len(confusion["data"]) == 100 and {row[0] for row in confusion["data"]} == set(names)
    assert sum(row[2] for row in confusion["data"]) == sum(row[2] for row in per_class["data"])  # images


@pytest.mark.parametrize("logger", ["false", "lightning.pytorch.loggers.CSVLogger"])
def test_classifier_runs_without_wandb(logger, tmp_path):
    import train

    args = [
        "fit", "--config", str(REPO / "configs/classifier.yaml"), "--trainer.max_epochs=1",
        "--trainer.limit_test_batches=1", "--trainer.callbacks=null", "--trainer.enable_checkpointing=false",
        f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger={logger}",
        "--model.init_args.backbone=resnet10t", "--data.init_args.synthetic=[]",
        "--data.init_args.real.shots=1",
    ]  # fmt: skip
    if logger != "false":
        args.append(f"--trainer.logger.init_args.save_dir={tmp_path}")
    cli = train.cli_main(args)
    assert "test/acc" in cli.trainer.callback_metrics
    if logger != "false":
        (metrics,) = tmp_path.rglob("metrics.csv")
        assert "test/acc" in metrics.read_text().splitlines()[0]
        (hparams,) = tmp_path.rglob("hparams.yaml")  # the resolved config, as under W&B
        assert "data.init_args.real.shots: 1" in hparams.read_text().splitlines()


def test_exported_classifier_serves_as_a_feature_extractor(tmp_path):
    import train
    from diffexpand.features import build_extractor

    export = tmp_path / "classifier.safetensors"
    cli = train.cli_main([
        "fit", "--config", str(REPO / "configs/classifier.yaml"), "--trainer.max_epochs=1",
        "--trainer.limit_test_batches=1", "--trainer.callbacks=null", "--trainer.enable_checkpointing=false",
        "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}",
        "--model.init_args.backbone=resnet10t", f"--model.init_args.export_path={export}",
        "--data.init_args.synthetic=[]", "--data.init_args.real.shots=1",
    ])  # fmt: skip
    extractor = build_extractor({"kind": "timm", "model_name": "resnet10t", "checkpoint": str(export)})
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    model = cli.model.model.eval()
    expected = model.forward_head(model.forward_features(extractor.preprocess(images)), pre_logits=True)
    assert torch.allclose(extractor(images), expected, atol=1e-5)


def test_synthetic_only_never_reads_a_real_image_and_draws_as_replace_at_p1(tmp_path):
    labels = np.repeat(np.arange(3), 4)

    def no_real_image(i):
        raise AssertionError(f"synthetic_only read real image {i}")

    real = LabeledImages("toy", ["c0", "c1", "c2"], ["thing"] * 3, labels,
                         [f"train/{i}" for i in range(12)], no_real_image)  # fmt: skip
    syn = SyntheticSet.read(_synthetic(tmp_path / "syn"), 3)
    only = TrainSet(
        real, np.arange(12), [syn], "synthetic_only", 0.5, seed=2, size=8, num_classes=3, augment=True
    )  # fmt: skip  (p does not apply: every sample is replaced)
    full = TrainSet(_real(), np.arange(12), [syn], "replace", 1.0, seed=2, size=8, num_classes=3,
                    augment=True)  # fmt: skip
    assert len(only) == 12  # as many samples an epoch as the real subset: Original's schedule
    for epoch in range(20):
        for i in range(len(only)):
            a, b = only[(i, epoch)], full[(i, epoch)]
            assert a["source"] == 0 and a["label"] == labels[i]
            assert torch.equal(a["pixel_values"], b["pixel_values"])  # the same draw as replace, p = 1


def test_synthetic_only_refuses_a_set_that_misses_a_class(tmp_path):
    syn = SyntheticSet.read(_synthetic(tmp_path / "syn", classes=2), 3)  # classes 0 and 1 only
    with pytest.raises(ValueError, match=r"no image of class\(es\) \[2\]"):
        TrainSet(_real(), np.arange(12), [syn], "synthetic_only", 1.0, seed=0, size=8, num_classes=3,
                 augment=False)  # fmt: skip
    with pytest.raises(ValueError, match="mixing must be one of"):
        ClassificationDataModule(mixing="synthetic-only")


def _ids(data) -> list[str]:
    return [data.ids[i] for i in range(len(data))]


def test_classifier_data_evaluates_on_the_split_it_was_asked_for():
    from diffexpand.data.subsets import validation_indices

    real = {"dataset": "fashion_mnist", "shots": 5, "seed": 0}
    on_val = ClassificationDataModule(real=real, synthetic=[], eval_split="validation")
    on_val.setup("fit")
    train_ids = {on_val.train_set.real.ids[int(j)] for j in on_val.train_set.indices}
    val_ids = _ids(on_val.test_set.data)
    expected = validation_indices(on_val.train_set.real.labels)
    assert on_val.eval_split == "validation" and len(val_ids) == 1000
    assert val_ids == [f"train/{j:05d}" for j in expected]  # the carved split, from the training images
    assert not set(val_ids) & train_ids
    assert np.bincount(on_val.test_set.data.labels).tolist() == [100] * 10
    on_test = ClassificationDataModule(real=real, synthetic=[])  # default: the test split, as before
    on_test.setup("test")
    assert on_test.eval_split == "test" and len(on_test.test_set) == 10_000
    assert all(i.startswith("test/") for i in _ids(on_test.test_set.data))


def test_validation_split_refuses_a_training_subset_that_overlaps_it_and_bad_settings():
    overlapping = ClassificationDataModule(
        real={"dataset": "fashion_mnist", "subset": "all"}, synthetic=[], eval_split="validation"
    )
    with pytest.raises(ValueError, match=r"subset='all'.* holds 1000 image\(s\) of the validation split"):
        overlapping.setup("test")
    with pytest.raises(ValueError, match="eval_split must be one of .* got 'val'"):
        ClassificationDataModule(eval_split="val")
    with pytest.raises(ValueError, match="validation_per_class must be >= 1, got 0"):
        ClassificationDataModule(eval_split="validation", validation_per_class=0)
    too_many = ClassificationDataModule(
        real={"dataset": "fashion_mnist"}, eval_split="validation", validation_per_class=10_000
    )
    with pytest.raises(ValueError, match=r"validation_per_class: .*per_class=10000"):
        too_many.setup("test")


def test_validation_split_refuses_a_set_made_from_its_images(tmp_path):
    """A set whose records name a validation image as their source (e.g. a ceiling set drawn around a
    smaller validation split) would train on what the classifier is evaluated on."""
    from diffexpand.data.readers import read_dataset
    from diffexpand.data.real_set import write_real_set
    from diffexpand.data.subsets import few_shot_indices, validation_indices

    data = read_dataset("fashion_mnist", None, "train")
    outside = few_shot_indices(data.labels, 20, 9)[-10:]  # reserved: never in any validation split
    # in the 300-per-class split, not in the default 100-per-class one
    inside = np.setdiff1d(validation_indices(data.labels, per_class=300), validation_indices(data.labels))[:1]
    write_real_set(tmp_path / "mixed", data, np.sort(np.concatenate([outside, inside])), 32, 0)
    real = {"dataset": "fashion_mnist", "shots": 5, "seed": 0}
    for per_class in (300, 100):  # a larger split holds the image; the default's does not
        module = ClassificationDataModule(
            real=real,
            synthetic=[str(tmp_path / "mixed")],
            eval_split="validation",
            validation_per_class=per_class,
        )
        if per_class == 300:
            with pytest.raises(
                ValueError, match=rf"mixed: metadata.jsonl line \d+ was made from train/0*{inside[0]},"
            ):
                module.setup("fit")
        else:
            module.setup("fit")
            assert len(module.train_set.synthetic[0]) == 11


def test_classifier_names_its_figures_after_the_split_it_was_evaluated_on(tmp_path):
    import train

    cli = train.cli_main([
        "fit", "--config", str(REPO / "configs/classifier.yaml"), "--trainer.max_epochs=1",
        "--trainer.limit_test_batches=1", "--trainer.limit_val_batches=1", "--trainer.callbacks=null",
        "--trainer.enable_checkpointing=false", "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}", "--model.init_args.backbone=resnet10t",
        "--data.init_args.synthetic=[]", "--data.init_args.real.shots=1",
        "--data.init_args.eval_split=validation",
    ])  # fmt: skip
    metrics = cli.trainer.callback_metrics
    assert "validation/acc" in metrics and "validation/mean_class_acc" in metrics
    assert not any(k.startswith("test/") for k in metrics)
    assert len(cli.datamodule.test_set) == 1000  # the validation split, not the 10k test split
