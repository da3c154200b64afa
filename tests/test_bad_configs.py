"""Bad datasets and settings: each stops (or warns) with a message naming the setting and what is
allowed, before any model is loaded; odd class names never lead outside the output folder."""

import json

import numpy as np
import pytest
from PIL import Image

import expand
from datamodules.labeled import LabeledImageDataModule
from diffexpand.concepts.io import ConceptMismatchError
from diffexpand.data.fashion_mnist import DatasetNotFoundError
from diffexpand.data.images import BadImageError
from diffexpand.data.subsets import few_shot_indices
from diffexpand.methods import create_method


@pytest.mark.parametrize(
    "method, settings, message",
    [
        ("diffii", {"split_ratio": 1.5}, r"split_ratio must lie in \[0, 1\]"),
        ("diffii", {"split_ratio": -0.1}, r"split_ratio must lie in \[0, 1\]"),
        ("distdiff", {"strength": 1.2}, r"strength must lie in \(0, 1\]"),
        ("distdiff", {"strength": 0.0}, r"strength must lie in \(0, 1\]"),
        (
            "real_guidance",
            {"strengths": [0.5, 1.5]},
            r"strengths must be a non-empty list of values in \[0, 1\]",
        ),
        ("distdiff", {"guidance_steps": 30}, r"M=30 lies outside the sampled range.*strength 0.5.*\[2, 25\]"),
        ("distdiff", {"energy": "dot"}, r"energy must be one of \('l2', 'cosine'\)"),
        ("distdiff", {"variant": "zero"}, "guidance variant must be one of"),
        ("distdiff", {"guidance_steps": "middle"}, "guidance stage must be one of"),
        ("distdiff", {"groups": -1}, r"groups \(K group prototypes per class\) must be >= 0"),
        ("distdiff", {"clustering": "dbscan"}, "clustering must be one of"),
    ],
)
def test_out_of_range_settings_name_the_setting_and_the_allowed_values(method, settings, message):
    with pytest.raises(ValueError, match=message):
        create_method(method, **settings)


def test_missing_root_and_empty_class_folder_say_what_is_expected(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist.*Expected class folders"):
        LabeledImageDataModule(dataset="imagefolder", root=str(tmp_path / "nowhere")).setup("fit")
    for name in ("full", "empty"):
        (tmp_path / name).mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "full" / "a.png")
    with pytest.raises(BadImageError, match="empty/: class folder holds no image file"):
        LabeledImageDataModule(dataset="imagefolder", root=str(tmp_path)).setup("fit")


def test_classes_smaller_than_n_shot_are_named_in_a_warning():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 5)
    with pytest.warns(UserWarning, match=r"shots=5: 1 class\(es\) have fewer.*class 1 has 2"):
        chosen = few_shot_indices(labels, 5, 0)
    assert np.bincount(labels[chosen]).tolist() == [5, 2, 5]  # no class is dropped


def test_odd_class_names_stay_inside_the_output_folder(tiny_sd_dir, tmp_path):
    names = ["../../escape", "a/b", "/etc/passwd", "with space", "ünïcödé ☃", ".."]
    out = tmp_path / "sets" / "out"
    expand.cli_main([
        "predict", "--config", "configs/expand/txt2img.yaml", f"--model.init_args.pretrained={tiny_sd_dir}",
        "--model.init_args.method.num_inference_steps=2", f"--output_dir={out}",
        "--data.init_args.real=null", f"--data.init_args.class_names={json.dumps(names)}",
        "--data.init_args.images_per_class=1", "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
    ])  # fmt: skip
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["class_name"] for r in records] == names  # the names are kept as data…
    for r in records:  # …but never used as paths
        assert (out / r["file_name"]).resolve().parent == (out / "images").resolve()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents) == []


@pytest.mark.parametrize("case", ["missing root", "concepts of other classes"])
def test_dataset_and_concept_errors_come_before_the_model_loads(case, tiny_concepts, tmp_path, monkeypatch):
    def model_loaded(*args, **kwargs):
        raise AssertionError("the diffusion model was loaded before the settings were checked")

    monkeypatch.setattr("diffexpand.models.runtime.load_sd_components", model_loaded)
    root = tmp_path / "images"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / name / "a.png")
    if case == "missing root":
        root, error, message = tmp_path / "nowhere", DatasetNotFoundError, "the `root` setting"
    else:
        error, message = ConceptMismatchError, r"not learned: \['cat', 'dog'\].*model.init_args.concepts"
    with pytest.raises(error, match=message):
        expand.cli_main([
            "predict", "--config", "configs/expand/diffii.yaml",
            f"--model.init_args.concepts={tiny_concepts}", "--data.init_args.real.dataset=imagefolder",
            f"--data.init_args.real.root={root}", f"--output_dir={tmp_path / 'out'}",
            "--trainer.accelerator=cpu",
        ])  # fmt: skip
