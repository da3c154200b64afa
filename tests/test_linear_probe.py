"""The linear probe: softmax regression on frozen features with weighted parts and soft targets, and
the benchmark script that probes a tiny-benchmark run's sets against the real images alone."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import linear_probe
from diffexpand.classification.linear_probe import ProbeData, fit_linear_probe, probe_accuracy


def one_hot(labels, classes=3):
    return torch.nn.functional.one_hot(torch.as_tensor(labels), classes).float()


def blobs(n_per_class, seed, classes=3, dim=8):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(classes, dim) * 4
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + torch.randn(len(labels), dim, generator=g), labels


def test_the_probe_separates_separable_classes_the_same_way_every_time():
    x, y = blobs(10, seed=0)
    held_x, held_y = blobs(50, seed=1)
    first = fit_linear_probe([ProbeData(x, one_hot(y), 1.0)])
    again = fit_linear_probe([ProbeData(x, one_hot(y), 1.0)])
    acc, per_class = probe_accuracy(first, held_x, held_y)
    assert acc > 95 and all(a > 90 for a in per_class)
    assert torch.equal(first.weight, again.weight)  # zero start, full batch: no seed involved


def test_part_weights_and_soft_targets_decide_the_fit():
    """The same point labelled 0 by one part and 1 by the other goes to the heavier part; a soft target
    is fitted as a distribution (about 0.8 on class 1), not as its top class."""
    point = torch.ones(1, 4)
    zero, one = ProbeData(point, one_hot([0]), 0.7), ProbeData(point, one_hot([1]), 0.3)
    assert fit_linear_probe([zero, one], weight_decay=0)(point).argmax().item() == 0
    zero, one = ProbeData(point, one_hot([0]), 0.3), ProbeData(point, one_hot([1]), 0.7)
    assert fit_linear_probe([zero, one], weight_decay=0)(point).argmax().item() == 1

    soft = ProbeData(point, torch.tensor([[0.2, 0.8, 0.0]]), 1.0)
    probabilities = fit_linear_probe([soft], weight_decay=0)(point).softmax(-1)[0]
    assert probabilities[1].item() == pytest.approx(0.8, abs=0.02)


def test_bad_probe_inputs_are_refused_with_what_is_wrong():
    x = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="probability vector"):
        ProbeData(x, torch.tensor([[1.0, 1.0], [0.0, 1.0]]), 1.0)
    with pytest.raises(ValueError, match="one row per image"):
        ProbeData(x, one_hot([0]), 1.0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        ProbeData(torch.full((1, 4), float("nan")), one_hot([0]), 1.0)
    with pytest.raises(ValueError, match="weight must be > 0"):
        ProbeData(x, one_hot([0, 1]), 0.0)
    with pytest.raises(ValueError, match="disagree"):
        fit_linear_probe(
            [ProbeData(x, one_hot([0, 1]), 1.0), ProbeData(torch.zeros(1, 5), one_hot([0]), 1.0)]
        )
    probe = fit_linear_probe([ProbeData(x, one_hot([0, 1]), 1.0)])
    assert probe_accuracy(probe, x, torch.tensor([0, 0]))[1][1:] == [None, None]  # classes not evaluated


def write_set(folder, images, labels, soft=None):
    (folder / "images").mkdir(parents=True)
    lines = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image).convert("RGB").resize((32, 32)).save(folder / "images" / f"{i}.png")
        record = {"file_name": f"images/{i}.png", "label": int(label)}
        if soft is not None:
            record["soft_label"] = soft[i]
        lines.append(json.dumps(record))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def test_the_script_pairs_each_set_with_the_real_images_alone(tmp_path, capsys):
    """On a fake benchmark run (oracle features: fast): extra correctly labelled real images help on every
    seed, the same images with shifted labels cost on every seed, and the table says so with the ceiling's
    share; a method missing a seed is named."""
    from diffexpand.data.fashion_mnist import load_fashion_mnist
    from diffexpand.data.subsets import ceiling_indices, few_shot_indices

    x, y = load_fashion_mnist("train")
    for seed in (0, 1):
        extra = ceiling_indices(y, few_shot_indices(y, 5, seed), 5, seed)
        write_set(tmp_path / "sets" / f"real-5shot-seed{seed}", x[extra], y[extra])
        write_set(tmp_path / "sets" / f"wrong-5shot-seed{seed}", x[extra], (y[extra] + 1) % 10)
    write_set(tmp_path / "sets" / "partial-5shot-seed0", x[:2], y[:2])

    args = ["--bench", str(tmp_path), "--seeds", "0", "1", "--extractor", "oracle", "--set-weight", "0.5"]
    figures = linear_probe.main([*args, "--cache", str(tmp_path / "cache")])
    assert set(figures) == {"Original", "real", "wrong"}  # the partial method is left out
    assert figures["real"]["wins"] == 2 and figures["real"]["gain"] > 0
    assert figures["wrong"]["wins"] == 0 and figures["wrong"]["gain"] < 0
    report = (tmp_path / "linear_probe-validation-5shot.md").read_text()
    assert "| Real ×5 (ceiling: other real images) |" in report and "100%" in report
    wrong_per_class = next(
        line for line in report.splitlines() if line.startswith("| wrong | ") and "%" not in line
    )
    assert wrong_per_class.count("|") == 12 and "-" in wrong_per_class  # a loss shows on its classes
    saved = json.loads((tmp_path / "linear_probe-validation-5shot.json").read_text())
    assert len(saved["per_class"]["wrong"]["0"]) == 10

    with pytest.raises(FileNotFoundError, match=r"\['partial'\].*complete: \['real', 'wrong'\]"):
        linear_probe.set_folders(tmp_path, 5, [0, 1], ["real", "partial"])
    assert set(linear_probe.set_folders(tmp_path, 5, None, None)) == {"real", "wrong"}  # seeds 0 and 1
    with pytest.raises(SystemExit):
        linear_probe.main(["--bench", str(tmp_path), "--shots", "10"])
    assert "holds no 10-shot set" in capsys.readouterr().err


def test_a_sets_soft_labels_are_its_targets(tmp_path):
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    write_set(tmp_path / "mix", images, [0, 1], soft=[[0.6] + [0.0] * 8 + [0.4], None])
    targets = linear_probe.set_targets(tmp_path / "mix")
    assert targets[0, 0].item() == pytest.approx(0.6) and targets[0, 9].item() == pytest.approx(0.4)
    assert targets[1].tolist() == one_hot([1], 10)[0].tolist()
