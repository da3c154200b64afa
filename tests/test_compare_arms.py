"""benchmarks/compare_arms.py: runs of two benchmark folders paired against the base's Original, run by run,
on hand-made classifier records; and the records it refuses."""

import json
import math

import pytest

from benchmarks import compare_arms
from benchmarks.bench_protocol import classifier_config_seed
from benchmarks.tiny_benchmark import MIXING, result_path

MACHINE = "CPU test, 2 threads"


def write_run(folder, row, seed, cseed, acc, machine=MACHINE, split="validation", shots=5, extra=()):
    own = classifier_config_seed()
    path = result_path(folder, row, MIXING, shots, seed, split, None if cseed == own else cseed)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"split": split, "metrics": {f"{split}/acc": acc}, "machine": machine}
    if extra:
        record["settings"] = {"extra": list(extra)}
    path.write_text(json.dumps(record))
    return path


def write_set_metrics(folder, method, seed, faithfulness, diversity, shots=5):
    path = folder / "sets" / f"{method}-{shots}shot-seed{seed}" / "set_metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"oracle": {"faithfulness": faithfulness, "diversity": diversity}}))


ORIGINAL = {(0, 0): 0.60, (0, 1): 0.62, (1, 0): 0.70, (1, 1): 0.68}
BASE = {(0, 0): 0.63, (0, 1): 0.63, (1, 0): 0.69, (1, 1): 0.69}  # gains +3 +1 / −1 +1
ARM = {(0, 0): 0.65, (0, 1): 0.66, (1, 0): 0.70, (1, 1): 0.67}  # gains +5 +4 / 0 −1


def two_arms(tmp_path, copy_original=True):
    base, arm = tmp_path / "base", tmp_path / "arm"
    for run, acc in ORIGINAL.items():
        write_run(base, "Original", *run, acc)
        if copy_original:
            write_run(arm, "Original", *run, acc)
    for run in BASE:
        write_run(base, "Diff-II", *run, BASE[run])
        write_run(arm, "Diff-II", *run, ARM[run])
    return base, arm


def args(base, arm, *extra):
    return [str(base), str(arm), "--seeds", "0", "1", "--classifier-seeds", "0", "1", *extra]


def test_each_run_pairs_with_the_bases_original_and_the_arm_with_the_base(tmp_path):
    base, arm = two_arms(tmp_path)
    table, original, machines, size = compare_arms.compare(
        base, [arm], ["Diff-II"], "validation", 5, [0, 1], [0, 1]
    )
    assert original == ORIGINAL and machines == {MACHINE} and size == 100
    got_base, got_arm = table["Diff-II"][base], table["Diff-II"][arm]
    assert got_arm.gains == pytest.approx({(0, 0): 0.05, (0, 1): 0.04, (1, 0): 0.0, (1, 1): -0.01})
    # subsets: each subset's accuracy is the mean of its classifier runs, paired with Original's mean
    assert got_base.per_subset.gains == pytest.approx({0: 0.02, 1: 0.0})
    assert got_arm.per_subset.gains == pytest.approx({0: 0.045, 1: -0.005})
    assert got_arm.per_subset.wins == 1 and got_base.per_subset.wins == 1  # a tie is not a win
    # run by run, arm − base: +2 +3 +1 −2 points: mean +1, higher in 3 of 4
    assert got_base.against_base is None
    assert got_arm.against_base.mean == pytest.approx(0.01) and got_arm.against_base.wins == 3
    assert got_arm.set_quality is None  # no set kept its metrics
    # a run's noise within a subset: base gains (+3, +1) and (−1, +1) have variance 2 each (points²),
    # the arm's (+5, +4) and (0, −1) 0.5 each
    assert got_base.run_spread == pytest.approx(math.sqrt(2) / 100)
    assert got_arm.run_spread == pytest.approx(math.sqrt(0.5) / 100)


def test_the_base_alone_prints_its_own_figures_and_run_spread(tmp_path):
    base, _ = two_arms(tmp_path)
    text = compare_arms.main([str(base), "--seeds", "0", "1", "--classifier-seeds", "0", "1"])
    assert "| run spread: pooled std of a run's gain within a subset | 1.41 |" in text
    assert "| per run against the base (runs higher) | — |" in text
    one_seed = compare_arms.main([str(base), "--seeds", "0", "1", "--classifier-seeds", "0"])
    assert "| run spread: pooled std of a run's gain within a subset | — |" in one_seed


def test_the_report_shows_runs_summaries_and_set_quality(tmp_path, capsys):
    base, arm = two_arms(tmp_path, copy_original=False)  # an arm without its own Original uses the base's
    for folder, (f, d) in ((base, (0.8, 0.5)), (arm, (0.7, 0.6))):
        for seed in (0, 1):
            write_set_metrics(folder, "diffii", seed, f + 0.02 * seed, d)
    out = tmp_path / "comparison.md"
    text = compare_arms.main(args(base, arm, "--out", str(out)))
    assert out.read_text() == text and text == capsys.readouterr().out
    assert "| 0 | +3.00 / +1.00 | +5.00 / +4.00 |" in text
    assert "| 1 | -1.00 / +1.00 | +0.00 / -1.00 |" in text
    assert "**+1.00 ± 1.41** (1/2, runs 3/4)" in text and "**+2.00 ± 3.54** (1/2, runs 2/4)" in text
    assert "| per run against the base (runs higher) | — | +1.00 ± 2.16 (3/4) |" in text
    assert "| 0.810 / 0.500 | 0.710 / 0.600 |" in text
    assert "Original: 65.00 % over the 4 runs" in text and "Warning" not in text


def test_records_from_two_machines_are_flagged(tmp_path):
    base, arm = two_arms(tmp_path)
    write_run(arm, "Diff-II", 1, 1, 0.67, machine="CPU other, 2 threads")
    assert "**Warning: the records name more than one machine" in compare_arms.main(args(base, arm))


def test_runs_on_validation_splits_of_two_sizes_are_refused_and_the_size_is_named(tmp_path):
    base, arm = two_arms(tmp_path)
    assert "validation split (100 images per class)" in compare_arms.main(args(base, arm))
    larger = ["--data.init_args.validation_per_class=500"]
    for folder, accuracies in ((base, ORIGINAL), (arm, ORIGINAL)):  # the same Original, another split
        for run, acc in accuracies.items():
            write_run(folder, "Original", *run, acc, extra=larger)
    with pytest.raises(
        ValueError, match=r"Diff-II-5shot-seed0.*: evaluated on a validation split of 100 images"
    ):
        compare_arms.main(args(base, arm))
    for run in BASE:
        write_run(base, "Diff-II", *run, BASE[run], extra=larger)
        write_run(arm, "Diff-II", *run, ARM[run], extra=larger)
    assert "validation split (500 images per class)" in compare_arms.main(args(base, arm))
    broken = write_run(arm, "Diff-II", 1, 1, 0.67, extra=["--data.init_args.validation_per_class=lots"])
    with pytest.raises(
        ValueError, match=rf"{broken}: its settings give the validation split's size as 'lots'"
    ):
        compare_arms.main(args(base, arm))


def test_an_arm_whose_original_differs_from_the_bases_is_refused(tmp_path):
    base, arm = two_arms(tmp_path)
    path = write_run(arm, "Original", 1, 0, 0.71)
    with pytest.raises(ValueError, match=rf"{path}: Original at 71.00 %, the base's at 70.00 %"):
        compare_arms.main(args(base, arm))


def test_a_missing_or_broken_record_is_named(tmp_path):
    base, arm = two_arms(tmp_path)
    missing = result_path(arm, "Diff-II", MIXING, 5, 1, "validation", 1)
    missing.unlink()
    with pytest.raises(
        FileNotFoundError, match=rf"{missing}: no record of Diff-II \(5-shot subset 1, classifier"
    ):
        compare_arms.main(args(base, arm))
    missing.write_text(json.dumps({"metrics": {"validation/acc": 1.7}}))
    with pytest.raises(ValueError, match="not an accuracy in"):
        compare_arms.main(args(base, arm))
    missing.write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        compare_arms.main(args(base, arm))


def test_broken_set_metrics_are_named(tmp_path):
    base, arm = two_arms(tmp_path)
    for seed in (0, 1):
        write_set_metrics(base, "diffii", seed, 0.8, 0.5)
    bad = base / "sets" / "diffii-5shot-seed1" / "set_metrics.json"
    bad.write_text(json.dumps({"oracle": {"faithfulness": "high", "diversity": 0.5}}))
    with pytest.raises(ValueError, match=rf"{bad}: oracle faithfulness / diversity"):
        compare_arms.main(args(base, arm))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "0", "0"], "--seeds names one twice"),
        (["--rows", "Diff-II", "Diff-II"], "--rows names one twice"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, capsys, extra, message):
    base, arm = two_arms(tmp_path)
    with pytest.raises(SystemExit):
        compare_arms.main(args(base, arm, *extra))
    assert message in capsys.readouterr().err


def test_folders_given_twice_or_missing_are_refused(tmp_path, capsys):
    base, arm = two_arms(tmp_path)
    for argv, message in (
        ([str(base), str(base)], "a folder is given twice"),
        ([str(base), str(tmp_path / "nowhere")], "not a folder"),
    ):
        with pytest.raises(SystemExit):
            compare_arms.main(argv)
        assert message in capsys.readouterr().err
