"""The benchmark report: table rows, paired gains, the ceiling row and its share, wins, synthetic-only
accuracies, the split it was evaluated on, CSV and the split-ratio plot from measured results; the
ceiling set the benchmark writes."""

import copy
import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import stage_records, tiny_benchmark
from benchmarks.bench_protocol import CEILING, MIXING, PROFILES
from benchmarks.bench_report import mean_std, write_report

QUICK_ROWS = ["Original", CEILING, "txt2img", "Diff-II", "DistDiff", "Diff-II+DistDiff"]


def _set(f, d, s):
    return {"faithfulness": f, "diversity": d, "images_per_s": s, "folder": "x"}


def _results(synthetic_only: bool) -> dict:
    """Three seeds, hand-made so each row's paired figures are easy to check."""

    def row(acc, sets=(), alone=None):
        return {"acc": dict(enumerate(acc)), "synthetic_only": dict(enumerate(alone or [])) if synthetic_only
                else {}, "sets": list(sets)}  # fmt: skip

    return {
        ("Original", 5): row([0.60, 0.64, 0.62]),
        (CEILING, 5): row([0.68, 0.70, 0.70], [_set(0.94, 0.52, None)] * 3, [0.66, 0.68, 0.67]),
        # Diff-II: gains +0.04, −0.01, +0.03 over Original: mean +0.02, 2 wins of 3
        ("Diff-II", 5): row([0.64, 0.63, 0.65], [_set(0.9, 0.4, 8.0)] * 3, [0.50, 0.52, 0.54]),
        ("txt2img", 5): row([0.50, 0.52, 0.51], [_set(0.2, 0.6, 9.0), _set(0.4, 0.8, 11.0)] * 2),
        ("DistDiff", 5): row([0.61, 0.65, 0.63], [_set(0.7, 0.6, 5.0)] * 3, [0.40, 0.40, 0.40]),
        ("Diff-II+DistDiff", 5): row([0.65, 0.64, 0.66], [_set(0.9, 0.45, 4.0)] * 3, [0.52, 0.53, 0.54]),
    }


def _profile(synthetic_only: bool) -> dict:
    return dict(PROFILES["quick"], seeds=[0, 1, 2], synthetic_only=synthetic_only)


def test_report_has_ceiling_row_paired_gains_wins_share_and_synthetic_only(tmp_path):
    curve = [{"split_ratio": s, "faithfulness": 1 - s / 2, "diversity": 0.4 + s / 4} for s in (0.0, 0.5, 1.0)]
    profile = _profile(True) | {"curve": True}
    text = write_report(tmp_path, profile, _results(True), curve, 120.0, "test", "test")
    assert CEILING == "Real ×5" and profile["rows"][:2] == ["Original", CEILING]
    assert ("| method | accuracy % | paired gain | wins | % of ceiling | synthetic only % | faithfulness | "
            "diversity | images/s |") in text  # fmt: skip
    # ceiling: gains +0.08, +0.06, +0.08 -> +7.33 ± 1.15, 3/3 wins; its synthetic-only = other real only
    assert "| Real ×5 | 69.33 ± 1.15 | +7.33 ± 1.15 | 3/3 | 100% | 67.00 ± 1.00 | 0.940 | 0.520 | — |" in text
    # Diff-II: gains +0.04, −0.01, +0.03 -> +2.00 ± 2.65, 2/3, 2.00 / 7.33 = 27% of the ceiling
    assert (
        "| Diff-II | 64.00 ± 1.00 | +2.00 ± 2.65 | 2/3 | 27% | 52.00 ± 2.00 | 0.900 | 0.400 | 8.00 |" in text
    )
    assert "| txt2img | 51.00 ± 1.00 | -11.00 ± 1.00 | 0/3 | -150% | — | 0.300 | 0.700 | 10.00 |" in text
    assert "| Original | 62.00 ± 2.00 | — | — | — | — | — | — | — |" in text
    assert "**Split: test**" in text and "wall time 2.0 min" in text and "(quick profile" not in text

    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["method"] for r in rows] == QUICK_ROWS
    diffii = rows[3]
    assert float(diffii["gain"]) == pytest.approx(0.02) and float(diffii["gain_std"]) == pytest.approx(
        0.02646, 1e-3
    )
    assert diffii["wins"] == "2" and diffii["seeds"] == "3" and diffii["split"] == "test"
    assert float(diffii["share_of_ceiling"]) == pytest.approx(0.02 / 0.07333, 1e-3)
    assert float(diffii["synthetic_only_mean"]) == pytest.approx(0.52)
    for kept in ("faithfulness", "diversity", "images_per_s", "acc_mean", "acc_std"):
        assert kept in diffii  # the existing columns stay
    per_seed = list(csv.DictReader((tmp_path / "results_per_seed.csv").open()))
    assert len(per_seed) == 18
    seed1 = next(r for r in per_seed if r["method"] == "Diff-II" and r["seed"] == "1")
    assert float(seed1["gain"]) == pytest.approx(-0.01) and float(seed1["synthetic_only_acc"]) == 0.52
    assert (tmp_path / "split_ratio.png").stat().st_size > 0 and "split_ratio.png" in text
    assert mean_std([0.5]) == "50.00"


def test_quick_report_without_synthetic_only_says_so_and_validation_runs_keep_the_final_table(tmp_path):
    text = write_report(tmp_path, _profile(False), _results(False), [], 60.0, "quick", "validation")
    assert "synthetic only %" not in text and "full profile only" in text
    assert "| Real ×5 | 69.33 ± 1.15 | +7.33 ± 1.15 | 3/3 | 100% | 0.940 | 0.520 | — |" in text
    assert "**Split: validation**" in text and "(quick profile, validation split)" in text
    assert "— 100 training images per class" in text  # the default size, when the profile names none
    assert (tmp_path / "report-validation.md").is_file() and (tmp_path / "results-validation.csv").is_file()
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "results.csv").exists()


def test_share_of_ceiling_is_blank_when_the_ceiling_gains_nothing(tmp_path):
    results = _results(False)
    results[(CEILING, 5)]["acc"] = {0: 0.60, 1: 0.64, 2: 0.62}  # no gain at all
    text = write_report(tmp_path, _profile(False), results, [], 1.0, "quick", "test")
    assert "| Diff-II | 64.00 ± 1.00 | +2.00 ± 2.65 | 2/3 | — |" in text


def test_report_shows_each_rows_gain_class_by_class_when_every_run_kept_it(tmp_path):
    results = _results(False)

    def accuracies(top, boot):
        return {"T-shirt/top": top, "Ankle boot": boot}

    results[("Original", 5)]["per_class"] = {s: accuracies(0.5, 0.9) for s in range(3)}
    # Diff-II: +0.2 / −0.1 on seeds 0 and 1, +0.1 / −0.1 on seed 2 -> +16.7 / −10.0 points
    results[("Diff-II", 5)]["per_class"] = {
        0: accuracies(0.7, 0.8),
        1: accuracies(0.7, 0.8),
        2: accuracies(0.6, 0.8),
    }
    results[("DistDiff", 5)]["per_class"] = {0: accuracies(0.6, 0.9)}  # one seed only: left out
    text = write_report(tmp_path, _profile(False), results, [], 1.0, "quick", "validation")
    assert "| method | T-shirt/top | Ankle boot |" in text and "| Diff-II | +16.7 | -10.0 |" in text
    assert "| DistDiff |" not in text.split("Paired gain per class")[1]
    assert "No per-class gains for Real ×5, txt2img, DistDiff, Diff-II+DistDiff: a run of theirs" in text
    rows = list(csv.DictReader((tmp_path / "results_per_class-validation.csv").open()))
    assert [(r["method"], r["class"]) for r in rows] == [
        ("Diff-II", "T-shirt/top"),
        ("Diff-II", "Ankle boot"),
    ]
    assert float(rows[0]["gain"]) == pytest.approx(0.5 / 3) and rows[0]["split"] == "validation"

    results[("Diff-II", 5)]["per_class"][1] = accuracies(0.7, None)  # a class seed 1 did not evaluate
    text = write_report(tmp_path, _profile(False), results, [], 1.0, "quick", "validation")
    assert "| Diff-II | +16.7 | — |" in text

    write_report(tmp_path, _profile(False), _results(False), [], 1.0, "quick", "test")
    text = (tmp_path / "report.md").read_text()
    assert "Paired gain per class" not in text  # results made without it
    assert "No per-class gains for Real ×5, txt2img, Diff-II, DistDiff, Diff-II+DistDiff:" in text
    assert not (tmp_path / "results_per_class.csv").exists()


def test_classify_keeps_the_accuracy_per_class_and_the_confusion_matrix(tmp_path):
    fast = ["--trainer.max_epochs=1", "--trainer.limit_test_batches=1", "--trainer.limit_val_batches=1",
            "--trainer.logger=false", "--model.init_args.backbone=resnet10t"]  # fmt: skip
    acc = tiny_benchmark.classify(tmp_path, "Original", None, "replace", 1, 0, fast, "validation")
    result = json.loads((tmp_path / "classifier/validation/Original-1shot-seed0.json").read_text())
    confusion = np.array(result["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 256  # one evaluation batch
    assert acc == pytest.approx(np.trace(confusion) / 256)
    assert result["steps"] == 1  # one epoch of ten images, batch 32: one optimizer step
    assert list(result["per_class_acc"])[0] == "T-shirt/top" and len(result["per_class_acc"]) == 10
    for c, accuracy in enumerate(result["per_class_acc"].values()):
        row = confusion[c]
        assert accuracy == (pytest.approx(row[c] / row.sum()) if row.sum() else None)
    assert (
        tiny_benchmark.per_class_of(tmp_path, "Original", "replace", 1, 0, "validation")
        == result["per_class_acc"]
    )
    assert tiny_benchmark.per_class_of(tmp_path, "Diff-II", "replace", 1, 0, "validation") is None


def test_ceiling_set_has_the_expansion_count_per_class_outside_subset_and_validation(tmp_path, monkeypatch):
    from diffexpand.classification.synthetic import SyntheticSet
    from diffexpand.data.fashion_mnist import load_fashion_mnist
    from diffexpand.data.subsets import few_shot_indices, validation_indices
    from diffexpand.evaluation import synthetic_quality

    measured = []

    def fake_quality(folder, oracle):  # the oracle's figures are not what this test is about
        measured.append(folder)
        return {"oracle": {"faithfulness": 0.9, "diversity": 0.5}}

    monkeypatch.setattr(synthetic_quality, "evaluate_set", fake_quality, raising=False)
    info = tiny_benchmark.make_ceiling_set(tmp_path, shots=2, seed=3)
    labels = load_fashion_mnist("train")[1]
    records = [json.loads(line) for line in (tmp_path / "sets/real-2shot-seed3/metadata.jsonl").open()]
    sources = np.array([int(r["source_ids"][0].removeprefix("train/")) for r in records])
    assert info["images"] == 100 and np.bincount(labels[sources]).tolist() == [10] * 10  # 5x of 2 shots
    written = [r["label"] for r in records]
    assert written == labels[sources].tolist() and written == sorted(written)  # true labels, class order
    assert not np.intersect1d(sources, few_shot_indices(labels, 2, 3)).size
    assert not np.intersect1d(sources, validation_indices(labels)).size
    assert "validation_per_class" not in json.loads(
        (tmp_path / "sets/real-2shot-seed3/bench.json").read_text()
    )
    syn = SyntheticSet.read(tmp_path / "sets/real-2shot-seed3", 10)
    assert syn.image(0).size == (tiny_benchmark.IMAGE_SIZE,) * 2 == (32, 32)
    assert tiny_benchmark.make_ceiling_set(tmp_path, shots=2, seed=3) == info and len(measured) == 1  # reused


def test_a_larger_validation_split_moves_the_ceiling_set_outside_it_and_a_set_of_another_size_is_refused(
    tmp_path, monkeypatch
):
    from diffexpand.data.fashion_mnist import load_fashion_mnist
    from diffexpand.data.subsets import VALIDATION_PER_CLASS, validation_indices
    from diffexpand.evaluation import synthetic_quality

    fake_quality = lambda folder, oracle: {"oracle": {"faithfulness": 0.9, "diversity": 0.5}}  # noqa: E731
    monkeypatch.setattr(synthetic_quality, "evaluate_set", fake_quality, raising=False)
    labels = load_fashion_mnist("train")[1]
    larger = validation_indices(labels, per_class=3 * VALIDATION_PER_CLASS)

    def sources(out):
        records = [json.loads(line) for line in (out / "sets/real-2shot-seed3/metadata.jsonl").open()]
        return np.array([int(r["source_ids"][0].removeprefix("train/")) for r in records])

    tiny_benchmark.make_ceiling_set(tmp_path / "default", shots=2, seed=3)
    assert np.intersect1d(sources(tmp_path / "default"), larger).size  # the default's set would leak into it
    info = tiny_benchmark.make_ceiling_set(tmp_path / "larger", 2, 3, 3 * VALIDATION_PER_CLASS)
    assert info["images"] == 100 and not np.intersect1d(sources(tmp_path / "larger"), larger).size
    assert tiny_benchmark.make_ceiling_set(tmp_path / "larger", 2, 3, 3 * VALIDATION_PER_CLASS) == info
    for out, per_class in ((tmp_path / "larger", VALIDATION_PER_CLASS), (tmp_path / "default", 300)):
        with pytest.raises(ValueError, match=r"real-2shot-seed3/bench.json was drawn outside a validation"):
            tiny_benchmark.make_ceiling_set(out, 2, 3, per_class)


def test_a_classifier_run_given_the_validation_size_is_evaluated_on_that_many_images_per_class(tmp_path):
    quick = ["--trainer.max_epochs=1", "--trainer.limit_val_batches=1", "--trainer.logger=false",
             "--model.init_args.backbone=resnet10t", "--data.init_args.validation_per_class=3"]  # fmt: skip
    tiny_benchmark.classify(tmp_path, "Original", None, "replace", 1, 0, quick, "validation")
    result = json.loads((tmp_path / "classifier/validation/Original-1shot-seed0.json").read_text())
    assert np.array(result["confusion"]).sum(axis=1).tolist() == [3] * 10


def test_validation_per_class_reaches_every_classifier_run_the_ceiling_and_the_report(
    tmp_path, monkeypatch, capsys
):
    calls, ceilings = [], []

    def fake_classify(out, row, synthetic, mixing, shots, seed, extra, split="test", classifier_seed=None):
        calls.append(extra)
        return 0.6

    fake_set = {"folder": "sets/x", "faithfulness": 0.9, "diversity": 0.5, "images_per_s": 1.0}
    monkeypatch.setattr(tiny_benchmark, "classify", fake_classify)
    monkeypatch.setattr(tiny_benchmark, "make_set", lambda *args: fake_set)
    monkeypatch.setattr(
        tiny_benchmark, "make_ceiling_set", lambda *args: ceilings.append(args[3]) or fake_set
    )
    monkeypatch.setattr(tiny_benchmark, "ensure_concepts", lambda *args: tmp_path)
    tiny_benchmark.main(["--out", str(tmp_path), "--split", "validation", "--validation-per-class", "400"])
    assert calls and all(extra == ["--data.init_args.validation_per_class=400"] for extra in calls)
    calls_extra = calls[0]
    assert ceilings == [400]
    assert (
        "**Split: validation** — 400 training images per class"
        in (tmp_path / "report-validation.md").read_text()
    )
    calls.clear()
    tiny_benchmark.main(["--out", str(tmp_path / "default"), "--split", "validation"])
    assert calls and all(extra == [] for extra in calls)  # the default's runs keep their records' settings
    for argv, message in (
        (["--validation-per-class", "400"], "only applies with --split validation"),
        (["--split", "validation", "--validation-per-class", "0"], "must be at least 1, got 0"),
        (["--split", "validation", "--validation-per-class", "6000"], "per_class=6000 asks for more images"),
        (
            ["--split", "validation", "--classifier-args=--data.validation_per_class=4"],
            "not --classifier-args",
        ),
    ):
        with pytest.raises(SystemExit):
            tiny_benchmark.main(["--out", str(tmp_path), *argv])
        assert message in capsys.readouterr().err
    calls.clear()
    old = tmp_path / "old" / "classifier" / "validation" / "Original-5shot-seed0.json"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"metrics": {"validation/acc": 0.6}}))  # made before records kept settings
    monkeypatch.undo()
    with pytest.raises(ValueError, match=f"{old} predates the records' settings"):
        tiny_benchmark.classify(
            tmp_path / "old", "Original", None, "replace", 5, 0, calls_extra, "validation"
        )


def test_main_runs_every_row_on_the_asked_split_with_one_mixing(tmp_path, monkeypatch):
    """The orchestration, with the expensive stages replaced: which classifier runs the quick profile
    asks for, on which split, with which set and mixing."""
    calls = []
    accuracy = {"Original": 0.60, CEILING: 0.68, "txt2img": 0.50, "Diff-II": 0.64, "DistDiff": 0.62,
                "Diff-II+DistDiff": 0.65}  # fmt: skip

    def fake_classify(out, row, synthetic, mixing, shots, seed, extra, split="test", classifier_seed=None):
        calls.append((row, synthetic, mixing, split))
        return accuracy[row] - (0.1 if mixing == "synthetic_only" else 0.0)

    def fake_set(out, method, shots, seed, *rest):
        return {"folder": f"sets/{method}", "faithfulness": 0.9, "diversity": 0.5, "images_per_s": 1.0}

    monkeypatch.setattr(tiny_benchmark, "classify", fake_classify)
    monkeypatch.setattr(tiny_benchmark, "make_set", fake_set)
    monkeypatch.setattr(
        tiny_benchmark, "make_ceiling_set", lambda out, shots, seed, per_class: fake_set(out, "real", 0, 0)
    )
    monkeypatch.setattr(tiny_benchmark, "ensure_concepts", lambda *args: tmp_path)
    tiny_benchmark.main(["--profile", "quick", "--out", str(tmp_path), "--split", "validation"])
    assert {split for *_, split in calls} == {"validation"}
    assert [c[0] for c in calls] == QUICK_ROWS  # no set-only runs
    # every row, the ceiling and DistDiff included, reaches the classifier the same way: same mixing, so
    # the same optimizer steps (concatenation would lengthen a row's epochs six times)
    assert {mix for _, _, mix, _ in calls} == {MIXING} == {"replace"}
    sets = {row: synthetic for row, synthetic, *_ in calls}
    assert sets[CEILING] == "sets/real" and sets["Original"] is None
    assert sets["DistDiff"] == "sets/distdiff" and sets["Diff-II+DistDiff"] == "sets/diffii_distdiff"
    text = (tmp_path / "report-validation.md").read_text()
    assert (
        "| Real ×5 | 68.00 | +8.00 | 1/1 | 100% |" in text
        and "| Diff-II | 64.00 | +4.00 | 1/1 | 50% |" in text
    )

    calls.clear()
    extra = []
    monkeypatch.setattr(tiny_benchmark, "make_set", lambda *args: extra.append(args[5]) or fake_set(*args))
    settings = ["--expand-args=--model.init_args.pretrained=p", "--expand-args=--model.init_args.x=1"]
    tiny_benchmark.main(["--profile", "quick", "--out", str(tmp_path), "--synthetic-only", *settings])
    assert extra[0] == ["--model.init_args.pretrained=p", "--model.init_args.x=1"]  # a repeated flag adds
    alone = [row for row, _, mix, _ in calls if mix == "synthetic_only"]
    assert alone == [CEILING, "txt2img", "Diff-II", "DistDiff", "Diff-II+DistDiff"]  # never Original
    assert "| Diff-II | 64.00 | +4.00 | 1/1 | 50% | 54.00 |" in (tmp_path / "report.md").read_text()


def test_classifier_seeds_train_every_row_once_per_seed_and_average_per_subset(tmp_path, monkeypatch):
    """--classifier-seeds: each row's classifier runs once per seed (the config's own seed as a run
    without seeds, so its records stay valid), a subset's accuracy is the mean of its runs, the report
    says so; a seed twice, or seeds given twice over, are refused."""
    calls = []
    accuracy = {"Original": 0.60, CEILING: 0.68, "txt2img": 0.50, "Diff-II": 0.64, "DistDiff": 0.62,
                "Diff-II+DistDiff": 0.65}  # fmt: skip

    def fake_classify(out, row, synthetic, mixing, shots, seed, extra, split="test", classifier_seed=None):
        calls.append((row, classifier_seed))
        return accuracy[row] + (0.02 if classifier_seed == 3 else 0.0) + (0.04 if row == "Diff-II" else 0)

    fake_set = {"folder": "sets/x", "faithfulness": 0.9, "diversity": 0.5, "images_per_s": 1.0}
    monkeypatch.setattr(tiny_benchmark, "classify", fake_classify)
    monkeypatch.setattr(tiny_benchmark, "per_class_of", lambda *args: {"Bag": 0.5 + (args[-1] or 0) / 10})
    monkeypatch.setattr(tiny_benchmark, "make_set", lambda *args: fake_set)
    monkeypatch.setattr(tiny_benchmark, "make_ceiling_set", lambda *args: fake_set)
    monkeypatch.setattr(tiny_benchmark, "ensure_concepts", lambda *args: tmp_path)
    done = tiny_benchmark.main(["--out", str(tmp_path), "--classifier-seeds", "0", "3", "--seeds", "0", "1"])
    assert calls[:2] == [("Original", None), ("Original", 3)]  # 0 is configs/classifier.yaml's own seed
    assert len(calls) == len(QUICK_ROWS) * 2 * 2  # rows x subsets x classifier seeds
    original = done["results"][("Original", 5)]
    assert original["acc"] == {0: pytest.approx(0.61), 1: pytest.approx(0.61)}
    assert original["per_class"][0] == {"Bag": pytest.approx(0.65)}  # (0.5 + 0.8) / 2
    text = (tmp_path / "report.md").read_text()
    assert "| Real ×5 | 69.00 ± 0.00 | +8.00 ± 0.00 | 2/2 | 100% |" in text
    assert "| Diff-II | 69.00 ± 0.00 | +8.00 ± 0.00 | 2/2 | 100% |" in text
    assert "every classifier ran once per seed in [0, 3]" in text
    for argv in (
        ["--classifier-seeds", "1", "1"],
        ["--classifier-seeds", "1", "--classifier-args=--seed_everything=2"],
    ):
        with pytest.raises(SystemExit):
            tiny_benchmark.main(["--out", str(tmp_path), *argv])


def test_a_classifier_seed_names_its_record_and_seeds_the_run(tmp_path):
    fast = ["--trainer.max_epochs=1", "--trainer.limit_test_batches=1", "--trainer.limit_val_batches=1",
            "--trainer.logger=false", "--model.init_args.backbone=resnet10t"]  # fmt: skip
    tiny_benchmark.classify(tmp_path, "Original", None, "replace", 1, 0, fast, "validation", 3)
    record = tmp_path / "classifier/validation/Original-1shot-seed0-cs3.json"
    assert json.loads(record.read_text())["settings"]["extra"] == [*fast, "--seed_everything=3"]
    assert not (tmp_path / "classifier/validation/Original-1shot-seed0.json").exists()
    assert tiny_benchmark.per_class_of(tmp_path, "Original", "replace", 1, 0, "validation", 3) is not None


def test_a_finished_stage_made_from_other_input_files_is_refused(tmp_path, capsys):
    """A set is not reused after the concepts it was made from changed, nor a classifier result after
    its set's records or images changed; a record made before digests were kept is reused with a note; a
    set reused from a copied --out is the copy."""
    concepts = tmp_path / "concepts" / "5shot-seed0"
    concepts.mkdir(parents=True)
    (concepts / "concepts.json").write_text('{"tokens": 4}')
    folder = tmp_path / "sets" / "diffii-5shot-seed0"
    (folder / "images").mkdir(parents=True)
    (folder / "metadata.jsonl").write_text('{"file_name": "images/a.png", "label": 0}\n')
    (folder / "images" / "a.png").write_bytes(b"first")
    made = {"folder": str(folder), "settings": tiny_benchmark.set_settings("diffii", concepts, [])}
    (folder / "bench.json").write_text(json.dumps(made))
    result = tmp_path / "classifier" / "test" / "Diff-II-5shot-seed0.json"
    result.parent.mkdir(parents=True)
    trained = tiny_benchmark.classifier_settings(str(folder), [])
    result.write_text(json.dumps({"metrics": {"test/acc": 0.6}, "settings": trained}))
    assert tiny_benchmark.make_set(tmp_path, "diffii", 5, 0, concepts, []) == made
    assert tiny_benchmark.classify(tmp_path, "Diff-II", str(folder), "replace", 5, 0, []) == 0.6
    moved = tmp_path / "copy"  # the whole --out copied elsewhere: a reused set is the copy, not the original
    shutil.copytree(tmp_path / "sets", moved / "sets")
    again = tiny_benchmark.make_set(moved, "diffii", 5, 0, concepts, [])
    assert again == made | {"folder": str(moved / "sets" / "diffii-5shot-seed0")}
    ceiling = moved / "sets" / "real-5shot-seed0"
    ceiling.mkdir()
    (ceiling / "bench.json").write_text(json.dumps({"folder": "/elsewhere/real-5shot-seed0", "images": 1}))
    assert tiny_benchmark.make_ceiling_set(moved, 5, 0) == {"folder": str(ceiling), "images": 1}

    txt2img = tiny_benchmark.set_settings("txt2img", concepts, [])  # a method without concepts
    (concepts / "concepts.json").write_text('{"tokens": 8}')  # re-learned
    assert tiny_benchmark.set_settings("txt2img", concepts, []) == txt2img
    with pytest.raises(ValueError, match="bench.json was made with other input files"):
        tiny_benchmark.make_set(tmp_path, "diffii", 5, 0, concepts, [])
    (folder / "set_metrics.json").write_text("{}")  # figures written beside the set: not what it trains on
    assert tiny_benchmark.classify(tmp_path, "Diff-II", str(folder), "replace", 5, 0, []) == 0.6
    (folder / "images" / "a.png").write_bytes(b"second")  # the set re-made
    with pytest.raises(ValueError, match="Diff-II-5shot-seed0.json was made with other input files"):
        tiny_benchmark.classify(tmp_path, "Diff-II", str(folder), "replace", 5, 0, [])

    (folder / "images" / "a.png").write_bytes(b"first")
    assert tiny_benchmark.classify(tmp_path, "Diff-II", str(folder), "replace", 5, 0, []) == 0.6
    # a record of the same row mixed another way (the benchmark once concatenated DistDiff's set)
    result.write_text(json.dumps({"metrics": {"test/acc": 0.6}, "settings": trained, "mixing": "concat"}))
    with pytest.raises(ValueError, match="Diff-II-5shot-seed0.json was made with mixing concat, now replace"):
        tiny_benchmark.classify(tmp_path, "Diff-II", str(folder), "replace", 5, 0, [])

    legacy = {"metrics": {"test/acc": 0.5}, "settings": {"extra": []}}
    result.write_text(json.dumps(legacy))
    capsys.readouterr()
    assert tiny_benchmark.classify(tmp_path, "Diff-II", str(folder), "replace", 5, 0, []) == 0.5
    assert "made before stages kept a digest of their input files" in capsys.readouterr().out


def fake_prior(folder: Path, weights: bytes) -> Path:
    """The files a prior's fingerprint covers (a config and a weight file), not a loadable model."""
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(weights)
    return folder


def test_concepts_and_sets_made_on_another_prior_are_refused(tmp_path, capsys):
    """Concepts and sets record the fingerprint of the prior they loaded (the --model pretrained setting,
    else the config's, else the default prior): rewriting the prior's weights in place refuses them, and
    a record made before the fingerprint was kept is reused with a note."""
    from diffexpand.models.identity import model_fingerprint
    from diffexpand.paths import DEFAULT_PRIOR

    prior = fake_prior(tmp_path / "prior", b"first")
    concept_config = tiny_benchmark.REPO / "configs" / "concept.yaml"
    method_config = tiny_benchmark.REPO / "configs" / "expand" / "diffii.yaml"
    assert stage_records.prior_of(method_config, []) == str(DEFAULT_PRIOR)
    chosen = ["--a=1", f"--model.init_args.pretrained={prior}"]
    assert stage_records.prior_of(method_config, chosen) == str(prior)
    assert stage_records.prior_of(concept_config, ["--model.pretrained", str(prior), "--b=2"]) == str(prior)
    own = tmp_path / "own.yaml"
    own.write_text(f"model:\n  init_args:\n    pretrained: {prior}\n")
    assert stage_records.prior_of(own, []) == str(prior)
    assert stage_records.prior_fingerprint(own, []) == model_fingerprint(prior)
    assert stage_records.prior_fingerprint(own, ["--model.init_args.pretrained=no/such/hub-id"]) == (
        "not on this machine: no/such/hub-id"
    )
    assert tiny_benchmark.set_settings("diffii", tmp_path, [])["prior"] == model_fingerprint(DEFAULT_PRIOR)

    extra = [f"--model.init_args.pretrained={prior}"]
    concepts = tmp_path / "concepts" / "5shot-seed0"
    concepts.mkdir(parents=True)
    (concepts / "concepts.json").write_text("{}")
    record = tmp_path / "concepts" / "5shot-seed0.bench.json"
    settings = {
        "extra": extra,
        "inputs": stage_records.inputs_digest(concept_config),
        "prior": model_fingerprint(prior),
    }
    record.write_text(json.dumps({"settings": settings}))
    folder = tmp_path / "sets" / "diffii-5shot-seed0"
    folder.mkdir(parents=True)
    made = {"folder": str(folder), "settings": tiny_benchmark.set_settings("diffii", concepts, extra)}
    (folder / "bench.json").write_text(json.dumps(made))
    assert tiny_benchmark.ensure_concepts(tmp_path, 5, 0, extra) == concepts
    assert tiny_benchmark.make_set(tmp_path, "diffii", 5, 0, concepts, extra) == made

    (prior / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"second")  # `make prior` again
    with pytest.raises(ValueError, match="5shot-seed0.bench.json was made with another prior"):
        tiny_benchmark.ensure_concepts(tmp_path, 5, 0, extra)
    with pytest.raises(ValueError, match="diffii-5shot-seed0/bench.json was made with another prior"):
        tiny_benchmark.make_set(tmp_path, "diffii", 5, 0, concepts, extra)

    del made["settings"]["prior"]
    (folder / "bench.json").write_text(json.dumps(made))
    capsys.readouterr()
    assert tiny_benchmark.make_set(tmp_path, "diffii", 5, 0, concepts, extra) == made
    assert "made before stages kept the fingerprint of the prior" in capsys.readouterr().out


def test_a_finished_stage_is_reused_only_with_the_settings_it_was_made_with(tmp_path):
    """Stages are found by name: a rerun into the same --out with other --expand-args or
    --classifier-args must not report the old set or accuracy as the new setting's."""
    folder = tmp_path / "sets" / "diffii-5shot-seed0"
    folder.mkdir(parents=True)
    made = {"folder": str(folder), "faithfulness": 0.9, "settings": {"extra": ["--a=1"], "paper": False}}
    (folder / "bench.json").write_text(json.dumps(made))
    assert tiny_benchmark.make_set(tmp_path, "diffii", 5, 0, tmp_path, ["--a=1"]) == made
    with pytest.raises(ValueError, match="bench.json was made with other settings.*another --out"):
        tiny_benchmark.make_set(tmp_path, "diffii", 5, 0, tmp_path, ["--a=2"])

    result = tmp_path / "classifier" / "validation" / "Diff-II-5shot-seed0.json"
    result.parent.mkdir(parents=True)
    result.write_text(json.dumps({"metrics": {"validation/acc": 0.6}, "settings": {"extra": []}}))
    assert tiny_benchmark.classify(tmp_path, "Diff-II", None, "replace", 5, 0, [], "validation") == 0.6
    with pytest.raises(ValueError, match="other settings"):
        tiny_benchmark.classify(
            tmp_path, "Diff-II", None, "replace", 5, 0, ["--seed_everything=1"], "validation"
        )

    concepts = tmp_path / "concepts" / "5shot-seed0"
    concepts.mkdir(parents=True)
    (concepts / "concepts.json").write_text("{}")
    (tmp_path / "concepts" / "5shot-seed0.bench.json").write_text(
        json.dumps({"settings": {"extra": ["--r=4"]}})
    )
    assert tiny_benchmark.ensure_concepts(tmp_path, 5, 0, ["--r=4"]) == concepts
    with pytest.raises(ValueError, match="5shot-seed0.bench.json was made with other settings"):
        tiny_benchmark.ensure_concepts(tmp_path, 5, 0, ["--r=8"])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"settings": {"ext', "not readable JSON"),
        ("[1, 2]", "not a JSON object"),
        ("{}", "lacks metrics"),
        ('{"metrics": {}, "settings": [1]}', r"its settings are \[1\], not an object"),
        ('{"metrics": {"test/acc": 95.0}}', r"metrics\['test/acc'\] is 95.0, not an accuracy in \[0, 1\]"),
        ('{"metrics": {"test/acc": "0.9"}}', r"metrics\['test/acc'\] is '0.9', not an accuracy"),
    ],
)
def test_a_torn_or_foreign_stage_record_is_named_not_reused(tmp_path, content, problem):
    """A classifier record cut short (a run killed while writing, before records were written whole) or
    not a record at all stops the rerun with the file's name and what to do, not a traceback."""
    result = tiny_benchmark.result_path(tmp_path, "Original", "replace", 5, 0, "test")
    result.parent.mkdir(parents=True)
    result.write_text(content)
    with pytest.raises(ValueError, match=rf"Original-5shot-seed0.json: {problem}.*delete it to remake"):
        tiny_benchmark.classify(tmp_path, "Original", None, "replace", 5, 0, [])


def test_stage_records_are_written_whole(tmp_path, monkeypatch):
    """A record is written beside its place and renamed over it: a write that fails half-way leaves the
    previous record (or none), never a torn one."""
    path = tmp_path / "classifier" / "test" / "Original-5shot-seed0.json"
    stage_records.write_record(path, {"metrics": {"test/acc": 0.5}})
    assert stage_records.read_record(path, "metrics") == {"metrics": {"test/acc": 0.5}}

    def disk_full(fd):  # the bytes were handed over, then the disk turns out full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        stage_records.write_record(path, {"metrics": {"test/acc": 0.9}})
    monkeypatch.undo()
    assert stage_records.read_record(path, "metrics") == {"metrics": {"test/acc": 0.5}}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_a_link_out_of_a_stage_folder_is_not_read_into_its_digest(tmp_path):
    folder = tmp_path / "sets" / "diffii-5shot-seed0" / "images"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(b"inside")
    before = stage_records.inputs_digest(folder)
    (folder / "inner.png").symlink_to(folder / "a.png")  # a link that stays inside counts as a file
    assert stage_records.inputs_digest(folder) != before
    (tmp_path / "secret").write_bytes(b"outside")
    (folder / "b.png").symlink_to(tmp_path / "secret")
    with pytest.raises(ValueError, match="b.png links outside .*images: a stage reads only what its folder"):
        stage_records.inputs_digest(folder)


def test_a_config_counts_by_what_it_says_not_by_its_comments(tmp_path):
    """Editing a comment or the layout of a config keeps the stages made from it; changing a value, or the
    bytes of any other file, does not. A file with a YAML name that is not YAML counts by its bytes."""
    config = tmp_path / "concept.yaml"
    config.write_text("model:\n  init_args:\n    lora_lr: 3.0e-3  # the recipe\n")
    before = stage_records.inputs_digest(config)
    config.write_text("# why this recipe\nmodel:\n    init_args: {lora_lr: 0.003}\n")
    assert stage_records.inputs_digest(config) == before
    config.write_text("model:\n  init_args:\n    lora_lr: 1.0e-3\n")
    assert stage_records.inputs_digest(config) != before
    config.write_text("model:\n  init_args:\n    lora_lr: '3.0e-3'\n")  # a string to the loader
    assert stage_records.inputs_digest(config) != before
    # jsonargparse's loader, not plain PyYAML (which reads 1e-3 as a string): the CLI's reading
    assert stage_records.config_meaning(b"lr: 1e-3\n") == stage_records.config_meaning(b"lr: 0.001 # c\n")

    for odd, plain in [
        (b"1: x\n", b"'1': x\n"),  # keys the CLI may read apart though JSON would write them alike
        (b"~: x\n", b"'null': x\n"),
        (b"a: !!timestamp 2020-01-01\n", b"a: 'datetime.date(2020, 1, 1)'\n"),
        (b"a: !!binary aGk=\n", b"a: \"b'hi'\"\n"),
        (b"a: !!set {x, y, z}\n", b"a: {x: null, y: null, z: null}\n"),
        (b"? !!binary aGk=\n: 1\n", b"hi: 1\n"),
        (b"a: !!int abc\n", b"a: abc\n"),  # the loader raises ValueError on these
        (b"a: !!timestamp 2020-13-45\n", b"a: '2020-13-45'\n"),
    ]:
        assert stage_records.config_meaning(odd) is None, odd  # counts by its bytes: never alike
        assert stage_records.config_meaning(plain) is not None, plain
    deep = b"a: " + b"[" * 2000 + b"]" * 2000 + b"\n"
    assert stage_records.config_meaning(deep) is None
    bomb = b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n".encode() for p, c in zip("abcdef", "bcdefg", strict=True)
    )
    assert stage_records.config_meaning(bomb) is None  # aliases that expand to ten million nodes

    broken = tmp_path / "broken.yaml"
    broken.write_bytes(b"a: [1\n")
    first = stage_records.inputs_digest(broken)
    broken.write_bytes(b"a: [1 # \n")
    assert stage_records.inputs_digest(broken) != first
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &x [*x]\n")  # an anchor that holds itself: no canonical form, so its bytes
    assert stage_records.config_meaning(loop.read_bytes()) is None
    assert stage_records.inputs_digest(loop) == stage_records.inputs_digest(loop).by_bytes()
    other = tmp_path / "notes.txt"
    other.write_text("a: 1\n")
    first = stage_records.inputs_digest(other)
    other.write_text("a: 1  # c\n")
    assert stage_records.inputs_digest(other) != first


def test_a_method_uses_concepts_when_its_config_sets_them_not_when_a_comment_names_them(tmp_path):
    config = tmp_path / "method.yaml"
    config.write_text("# concepts: set model.init_args.concepts to use them\nmodel:\n  init_args: {}\n")
    assert not tiny_benchmark.uses_concepts(config)
    config.write_text("model:\n  init_args:\n    concepts: assets/concepts/x  # learned\n")
    assert tiny_benchmark.uses_concepts(config)
    assert tiny_benchmark.uses_concepts(tiny_benchmark.method_config("diffii"))
    assert not tiny_benchmark.uses_concepts(tiny_benchmark.method_config("distdiff"))


def test_a_record_with_the_byte_digest_of_unchanged_files_is_reused_and_updated(tmp_path, capsys):
    """Records written before configs counted by their meaning keep their files' byte digest: while the
    files are unchanged such a record is reused (and rewritten with today's digest, so a later comment
    edit keeps it); once a value changed it is refused."""
    config = tmp_path / "classifier.yaml"
    config.write_text("trainer:\n  max_epochs: 60  # long enough\n")
    digest = stage_records.inputs_digest(config)
    assert digest.by_bytes() != digest
    record = tmp_path / "Original-5shot-seed0.json"
    old = {"metrics": {"test/acc": 0.6}, "settings": {"extra": [], "inputs": digest.by_bytes()}}
    record.write_text(json.dumps(old))
    assert (
        stage_records.reused(record, {"extra": [], "inputs": digest}, "metrics")["metrics"] == old["metrics"]
    )
    assert "counted config files by their bytes" in capsys.readouterr().out
    updated = json.loads(record.read_text())
    assert updated == {**old, "settings": {"extra": [], "inputs": digest}}  # nothing else lost
    assert copy.deepcopy(digest) == digest and type(copy.deepcopy(digest)) is str

    config.write_text("trainer:\n  max_epochs: 60  # enough for the tiny world\n")
    assert stage_records.reused(record, {"extra": [], "inputs": stage_records.inputs_digest(config)})
    record.write_text(json.dumps(old))  # the old byte digest, but a comment changed since it was written
    with pytest.raises(ValueError, match="made with other input files"):
        stage_records.reused(record, {"extra": [], "inputs": stage_records.inputs_digest(config)})
    record.write_text(json.dumps({**old, "settings": {"extra": ["--x=1"], "inputs": digest.by_bytes()}}))
    config.write_text("trainer:\n  max_epochs: 60  # long enough\n")
    with pytest.raises(ValueError, match="made with other settings"):  # the digest alone is forgiven
        stage_records.reused(record, {"extra": [], "inputs": stage_records.inputs_digest(config)})
    config.write_text("trainer:\n  max_epochs: 120\n")
    record.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="made with other input files"):
        stage_records.reused(record, {"extra": [], "inputs": stage_records.inputs_digest(config)})


def test_a_sets_digest_covers_every_image_its_records_name(tmp_path):
    """The writer puts images under images/, but a record may name an image elsewhere in the set folder:
    changing that one must change the digest too; a set without such records keeps its digest."""
    folder = tmp_path / "set"
    (folder / "images").mkdir(parents=True)
    (folder / "extra").mkdir()
    (folder / "images" / "a.png").write_bytes(b"a")
    (folder / "extra" / "b.png").write_bytes(b"b")
    (folder / "metadata.jsonl").write_text('{"file_name": "images/a.png", "label": 0}\n')
    plain = stage_records.inputs_digest(*stage_records.set_inputs(folder))
    assert plain == stage_records.inputs_digest(folder / "metadata.jsonl", folder / "images")  # as before
    with (folder / "metadata.jsonl").open("a") as fh:
        fh.write('{"file_name": "extra/b.png", "label": 1}\n')
    before = stage_records.inputs_digest(*stage_records.set_inputs(folder))
    (folder / "extra" / "b.png").write_bytes(b"changed")
    assert stage_records.inputs_digest(*stage_records.set_inputs(folder)) != before


def test_a_classifier_run_with_one_periodic_validation_batch_ends_as_with_all_of_them(tmp_path):
    """The benchmark cuts the every-N-epochs validation to one batch (it only draws curves): validation
    must touch neither the weights nor training's random draws, so the final figures stay the same."""
    fast = ["--trainer.max_epochs=6", "--trainer.check_val_every_n_epoch=2", "--trainer.limit_test_batches=1",
            "--trainer.logger=false", "--model.init_args.backbone=resnet10t"]  # fmt: skip
    full = tiny_benchmark.classify(
        tmp_path / "full",
        "Original",
        None,
        "replace",
        1,
        0,
        [*fast, "--trainer.limit_val_batches=1.0"],
        "validation",
    )
    cut = tiny_benchmark.classify(tmp_path / "cut", "Original", None, "replace", 1, 0, fast, "validation")
    per_class = [
        tiny_benchmark.per_class_of(tmp_path / o, "Original", "replace", 1, 0, "validation")
        for o in ("full", "cut")
    ]
    assert cut == full and per_class[0] == per_class[1]


def test_concept_runs_are_learned_with_their_own_seed_and_the_choice_is_kept(tmp_path, monkeypatch):
    """--concept-runs K: run 0 is the usual concept folder, run r is learned with seed_everything r, the
    check's choice is returned and recorded, and a rerun reuses the record instead of sampling again."""
    from diffexpand.concepts import selection
    from tools import select_concepts

    learned, scored = [], []

    def fake_learn(out, folder, shots, seed, extra):
        learned.append((folder.name, extra))
        if not folder.is_dir():  # learned once, as the real stage does
            folder.mkdir(parents=True)
            (folder / "concepts.json").write_text(json.dumps({"run": folder.name}))
        return folder

    first = tmp_path / "concepts" / "5shot-seed1"
    monkeypatch.setattr(tiny_benchmark, "learn_concepts", fake_learn)
    monkeypatch.setattr(tiny_benchmark, "ensure_concepts", lambda out, shots, seed, extra: fake_learn(
        out, first, shots, seed, extra))  # fmt: skip
    monkeypatch.setattr(select_concepts, "few_shot_images", lambda *args: (None, None))

    def fake_score(folders, images, labels):
        scored.append(list(folders))
        return {"class_names": ["a"], "runs": [{"mean": m} for m in (0.5, 0.4, 0.9)], "chosen": 2}

    monkeypatch.setattr(selection, "score_runs", fake_score)
    chosen = tiny_benchmark.chosen_concepts(tmp_path, 5, 1, ["--x=1"], 3)
    assert chosen == tmp_path / "concepts" / "5shot-seed1-run2"
    assert learned == [
        ("5shot-seed1", ["--x=1"]),
        ("5shot-seed1-run1", ["--x=1", "--seed_everything=1"]),
        ("5shot-seed1-run2", ["--x=1", "--seed_everything=2"]),
    ]
    record = json.loads((tmp_path / "concepts" / "5shot-seed1.selection.json").read_text())
    assert record["chosen_folder"] == str(chosen) and record["chosen"] == 2
    assert tiny_benchmark.chosen_concepts(tmp_path, 5, 1, ["--x=1"], 3) == chosen
    assert len(scored) == 1  # reused, not sampled again
    (chosen / "concepts.json").write_text("{}")  # a run changed since the choice: it must not be reused
    with pytest.raises(ValueError, match="5shot-seed1.selection.json was made with other input files"):
        tiny_benchmark.chosen_concepts(tmp_path, 5, 1, ["--x=1"], 3)
    record["settings"]["inputs"] = stage_records.inputs_digest(
        *sorted((tmp_path / "concepts").glob("5shot-seed1*/"))
    )
    (tmp_path / "concepts" / "5shot-seed1.selection.json").write_text(json.dumps({**record, "chosen": 7}))
    with pytest.raises(ValueError, match="chosen run 7 is not one of the 3"):
        tiny_benchmark.chosen_concepts(tmp_path, 5, 1, ["--x=1"], 3)
    learned.clear()
    assert tiny_benchmark.chosen_concepts(tmp_path, 5, 1, ["--x=1"], 1) == first and len(learned) == 1


def test_concept_runs_below_one_are_refused(capsys):
    with pytest.raises(SystemExit):
        tiny_benchmark.main(["--concept-runs", "0"])
    assert "--concept-runs must be at least 1" in capsys.readouterr().err


def test_the_report_says_when_the_concepts_were_chosen_among_runs(tmp_path, monkeypatch):
    chosen_with = []
    monkeypatch.setattr(tiny_benchmark, "classify", lambda out, row, *rest, **kw: 0.6)
    monkeypatch.setattr(tiny_benchmark, "chosen_concepts", lambda out, shots, seed, extra, runs: (
        chosen_with.append(runs) or tmp_path))  # fmt: skip
    for runs in ("1", "3"):
        tiny_benchmark.main(["--rows", "Original", "--out", str(tmp_path / runs), "--concept-runs", runs])
    assert chosen_with == [1, 3]
    assert "Concepts: learned" not in (tmp_path / "1" / "report.md").read_text()
    assert "Concepts: learned 3 times per subset" in (tmp_path / "3" / "report.md").read_text()


def test_the_report_names_the_prior_its_concepts_and_sets_came_from(tmp_path):
    from diffexpand.paths import DEFAULT_PRIOR

    rows = ["Original", CEILING, "Diff-II"]
    assert tiny_benchmark.priors_used(rows, [], []) == [str(DEFAULT_PRIOR)]
    assert tiny_benchmark.priors_used(["Original", CEILING], [], []) == []  # no set made by a prior
    candidate = "outputs/candidate-prior"
    given = [f"--model.init_args.pretrained={candidate}"]
    assert tiny_benchmark.priors_used(rows, given, given) == [candidate]
    # concepts on the committed prior, sets on another: both are named
    assert tiny_benchmark.priors_used(rows, [], given) == sorted([str(DEFAULT_PRIOR), candidate])

    def report(priors):
        profile = dict(_profile(False), priors=priors)
        return write_report(tmp_path, profile, _results(False), [], 1.0, "quick", "test")

    committed = report([str(DEFAULT_PRIOR)])
    assert "on the committed tiny prior" in committed
    other = report([candidate])
    assert f"on the prior {candidate} (given by" in other and "committed tiny prior" not in other
