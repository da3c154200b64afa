"""A synthetic set's metadata.jsonl is untrusted input: every reader (the classifier, the preview, the
set metrics, the tools) validates it once, refuses names that leave the set folder, reports every
fault at once with its line, and never counts a duplicated line twice."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffexpand.classification.synthetic import SyntheticSet
from diffexpand.evaluation.synthetic_quality import load_synthetic
from diffexpand.manifest import read_manifest, write_dataset_card
from diffexpand.preview import contact_sheet
from tools.compare_synthetic_sets import compare

REPO = Path(__file__).resolve().parents[1]


def _image(path: Path, level: int = 200) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (level, level, level)).save(path)


def _set(folder: Path, lines: list, classes: int = 3) -> Path:
    """A set folder: an image for each of `classes` valid records, then `lines` (dicts, or raw text)
    after them, as written."""
    text = []
    for c in range(classes):
        _image(folder / f"images/s{c}.png", 50 * c)
        text.append(json.dumps({"file_name": f"images/s{c}.png", "label": c, "id": f"s{c}"}))
    text += [line if isinstance(line, str) else json.dumps(line) for line in lines]
    (folder / "metadata.jsonl").write_text("".join(t + "\n" for t in text))
    return folder


def _escaping_line(kind: str, tmp_path: Path, folder: Path) -> dict:
    """A record whose image lies outside `folder`, by `kind` of escape."""
    outside = tmp_path / "outside.png"
    _image(outside, 255)  # an image: the old readers trained on it
    if kind == "dotdot":
        name = "../outside.png"
    elif kind == "absolute":
        name = str(outside)
    else:  # a symlink inside the folder that leads out
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "images/link.png").symlink_to(outside)
        name = "images/link.png"
    return {"file_name": name, "label": 1, "id": "x"}


READERS = {
    "classifier": lambda folder: SyntheticSet.read(folder, 3),
    "preview": lambda folder: contact_sheet(folder),
    "set metrics": lambda folder: load_synthetic(folder),
    "compare tool": lambda folder: compare(folder, folder),
}


@pytest.mark.parametrize("reader", ["classifier", "set metrics", "compare tool"])
@pytest.mark.parametrize("state", ["missing folder", "no manifest", "empty manifest"])
def test_a_reader_that_needs_images_refuses_a_set_without_records_in_one_wording(tmp_path, reader, state):
    folder = tmp_path / "set"
    if state != "missing folder":
        folder.mkdir()
    if state == "empty manifest":
        (folder / "metadata.jsonl").write_text("")
    wording = r"synthetic set .*set holds no metadata.jsonl records; make it with `python expand.py predict"
    with pytest.raises(FileNotFoundError, match=wording):
        READERS[reader](folder)


def test_the_preview_draws_nothing_for_a_set_without_records(tmp_path):
    assert contact_sheet(tmp_path) is None  # the preview shows what is there: nothing is not an error


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_a_file_name_leaving_the_set_folder_is_refused_with_set_line_and_value(tmp_path, kind, reader):
    folder = tmp_path / "set"
    line = _escaping_line(kind, tmp_path, folder)
    _set(folder, [line])
    with pytest.raises(ValueError) as caught:
        READERS[reader](folder)
    message = str(caught.value)
    assert str(folder) in message and "metadata.jsonl line 4" in message
    assert repr(line["file_name"]) in message and "outside the set folder" in message


def test_a_symlink_that_stays_inside_the_folder_is_read(tmp_path):
    folder = _set(tmp_path / "set", [])
    (folder / "alias").symlink_to(folder / "images")  # e.g. a folder linked within the set
    (folder / "metadata.jsonl").write_text(
        json.dumps({"file_name": "alias/s0.png", "label": 0, "id": "s0"}) + "\n"
    )
    assert np.asarray(SyntheticSet.read(folder, 3).image(0)).max() == 0


def test_malformed_json_names_the_file_and_its_line(tmp_path):
    folder = _set(tmp_path / "set", ['{"file_name": "images/s0.png", "label": 0,', {"x": 1}], classes=2)
    # lines: s0, s1, the broken one (line 3), then line 4 with no file_name or label
    expected = f"{folder / 'metadata.jsonl'} line 3: not valid JSON"
    with pytest.raises(ValueError, match="line 3") as caught:
        read_manifest(folder)  # the writer's own reader (resume, dataset card)
    assert expected in str(caught.value)
    with pytest.raises(ValueError) as caught:
        SyntheticSet.read(folder, 2)
    message = str(caught.value)
    assert "metadata.jsonl line 3: not valid JSON" in message and "metadata.jsonl line 4" in message


def test_every_fault_of_a_set_is_reported_at_once_with_its_line(tmp_path):
    folder = _set(
        tmp_path / "set",
        [
            {"file_name": "images/s0.png", "label": "3", "id": "a"},  # line 4: label as text
            {"file_name": "images/s1.png", "id": "b"},  # line 5: no label
            {"file_name": "images/gone.png", "label": 0, "id": "c"},  # line 6: no such image
            {"file_name": "images/s2.png", "label": 7, "id": "d"},  # line 7: no class 7 of 3
            {"file_name": "images/s2.png", "label": True, "id": "e"},  # line 8: a bool is no label
            {"file_name": "images/s1.png", "label": 1, "id": "f", "soft_label": [1, 0]},  # line 9
        ],
    )
    for read in (lambda: SyntheticSet.read(folder, 3), lambda: contact_sheet(folder)):
        with pytest.raises(ValueError) as caught:
            read()
        message = str(caught.value)
        assert str(folder) in message
        for line in (4, 5, 6, 8):
            assert f"metadata.jsonl line {line}:" in message, line
        assert "'3'" in message and "'label'" in message and "'images/gone.png'" in message
    with pytest.raises(ValueError) as caught:
        SyntheticSet.read(folder, 3)  # the class count is known: the range and soft labels are checked
    assert "metadata.jsonl line 7:" in str(caught.value) and "metadata.jsonl line 9:" in str(caught.value)


def test_a_long_list_of_faults_is_cut_and_counted(tmp_path):
    folder = _set(tmp_path / "set", [{"file_name": f"images/n{i}.png", "label": 0} for i in range(30)])
    with pytest.raises(ValueError) as caught:
        SyntheticSet.read(folder, 3)
    message = str(caught.value)
    assert "30 faulty lines" in message and "line 23:" in message and "line 24:" not in message
    assert "and 10 more" in message


def test_an_exact_duplicate_line_is_read_once_and_a_conflicting_one_refused(tmp_path):
    again = {"file_name": "images/s1.png", "label": 1, "id": "s1"}
    folder = _set(tmp_path / "set", [again])
    with pytest.warns(UserWarning, match=r"line 4 repeats line 2"):
        syn = SyntheticSet.read(folder, 3)
    assert len(syn) == 3 and {c: len(m) for c, m in syn.by_class.items()} == {0: 1, 1: 1, 2: 1}
    with pytest.warns(UserWarning, match="repeats"):
        assert len(load_synthetic(folder)[1]) == 3

    other = _set(tmp_path / "other", [{"file_name": "images/s2.png", "label": 1, "id": "s1"}])
    with pytest.raises(ValueError, match=r"line 4: id 's1' is already on line 2 with other values"):
        SyntheticSet.read(other, 3)
    shared = _set(tmp_path / "shared", [{"file_name": "images/s2.png", "label": 2, "id": "s9"}])
    with pytest.raises(ValueError, match=r"line 4: file_name 'images/s2.png' is already the image of line 3"):
        SyntheticSet.read(shared, 3)


def test_a_set_without_ids_is_keyed_by_file_name(tmp_path):
    folder = tmp_path / "set"
    for c in range(2):
        _image(folder / f"{c}.png")
    lines = [{"file_name": "0.png", "label": 0}, {"file_name": "1.png", "label": 1}]
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert len(SyntheticSet.read(folder, 2)) == 2
    with (folder / "metadata.jsonl").open("a") as fh:
        fh.write(json.dumps({"file_name": "1.png", "label": 0}) + "\n")
    with pytest.raises(ValueError, match=r"line 3: file_name '1.png' is already the image of line 2"):
        SyntheticSet.read(folder, 2)


def test_a_torn_final_line_stays_ignored(tmp_path):
    folder = _set(tmp_path / "set", [])
    with (folder / "metadata.jsonl").open("a") as fh:
        fh.write('{"file_name": "images/s')  # an interrupted append
    with pytest.warns(UserWarning, match="no line end and is left out"):
        assert len(SyntheticSet.read(folder, 3)) == 3
    assert len(read_manifest(folder)) == 3


def test_a_set_the_project_writes_still_reads_trains_and_gets_its_card(tmp_path):
    from test_classifier import _real, _synthetic

    from datamodules.classification import TrainSet

    folder = _synthetic(tmp_path / "syn", soft=True)
    syn = SyntheticSet.read(folder, 3)
    ds = TrainSet(_real(), np.arange(12), [syn], "concat", 0.0, seed=0, size=8, num_classes=3, augment=False)
    assert all(ds[i]["pixel_values"].shape == (3, 8, 8) for i in range(len(ds)))
    assert contact_sheet(folder).size[1] > 0 and write_dataset_card(folder).is_file()
    assert compare(folder, folder)["records"] == 9


def test_train_fit_with_a_hostile_set_exits_1_with_one_error_line_before_training(tmp_path):
    folder = tmp_path / "hostile"
    _set(folder, [_escaping_line("dotdot", tmp_path, folder)], classes=10)
    command = [
        sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs/classifier.yaml"),
        "--trainer.max_epochs=1", "--trainer.limit_test_batches=1", "--trainer.logger=false",
        "--trainer.callbacks=null", "--trainer.enable_checkpointing=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}", "--model.init_args.backbone=resnet10t",
        f"--data.init_args.synthetic=[{folder}]", "--data.init_args.real.shots=1",
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(errors) == 1 and str(folder) in errors[0]
    assert "metadata.jsonl line 11" in errors[0] and "'../outside.png'" in errors[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


def test_a_line_that_is_not_utf8_is_named_by_its_line(tmp_path):
    folder = _set(tmp_path / "set", [])
    with (folder / "metadata.jsonl").open("ab") as fh:
        fh.write(b'{"file_name": "images/\xff.png", "label": 0}\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl line 4: not UTF-8 text"):
        read_manifest(folder)
    with pytest.raises(ValueError, match=r"metadata.jsonl line 4: not UTF-8 text"):
        SyntheticSet.read(folder, 3)


def test_the_compare_tool_prints_a_hostile_set_as_one_error_line(tmp_path):
    folder = tmp_path / "set"
    _set(folder, [_escaping_line("absolute", tmp_path, folder)])
    tool = REPO / "tools/compare_synthetic_sets.py"
    done = subprocess.run(
        [sys.executable, str(tool), str(folder), str(folder)], capture_output=True, text=True
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(errors) == 1 and "metadata.jsonl line 4: file_name leads outside the set folder" in errors[0]


@pytest.mark.parametrize("reader", ["set metrics", "compare tool"])
def test_an_image_that_does_not_decode_is_named_by_its_line(tmp_path, reader):
    """A record's file that is not an image (or is cut short) stops the reader with the set's line and
    the reason, not a decoder traceback."""
    folder = _set(tmp_path / "set", [])
    (folder / "images/s1.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"metadata.jsonl line 2 \(images/s1.png\): not an image PIL can"):
        READERS[reader](folder)


def test_the_classifier_names_the_line_of_an_image_that_stopped_decoding_after_reading(tmp_path):
    """The classifier opens its images epoch after epoch: a file spoiled after the set was read is named
    by its line too."""
    folder = _set(tmp_path / "set", [])
    synthetic = SyntheticSet.read(folder, 3)
    (folder / "images/s1.png").write_bytes(b"not a png at all")
    assert synthetic.image(0).size == (8, 8)
    with pytest.raises(ValueError, match=r"metadata.jsonl line 2 \(images/s1.png\): not an image PIL can"):
        synthetic.image(1)


def test_evaluate_synthetic_bounds_labels_by_the_oracle_and_the_clip_prompts(tmp_path):
    """A label the oracle has no class for is a faulty line, not an image counted unfaithful; a label
    too large to make one CLIP prompt per class up to it is refused before any model loads."""
    from tools.evaluate_synthetic import MAX_CLIP_LABEL
    from tools.evaluate_synthetic import main as evaluate

    folder = _set(tmp_path / "set", [{"file_name": "images/far.png", "label": 57, "id": "far"}])
    _image(folder / "images/far.png")
    with pytest.raises(ValueError, match="metadata.jsonl line 4") as caught:
        evaluate([str(folder), "--real-reference", "0"])
    assert "57" in str(caught.value)
    far = _set(tmp_path / "far", [{"file_name": "images/far.png", "label": MAX_CLIP_LABEL, "id": "far"}])
    _image(far / "images/far.png")
    with pytest.raises(ValueError, match=f"labels reach {MAX_CLIP_LABEL}; the CLIP score"):
        evaluate([str(far), "--no-oracle", "--clip", str(tmp_path / "no-clip-needed")])
