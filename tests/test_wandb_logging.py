"""What a classifier run shows besides its metrics: contact sheets with class names, the figures of
`set_metrics.json`, the resolved config as flat typed keys (end to end: tests/test_classifier.py)."""

import json

import numpy as np
from PIL import Image

from callbacks.wandb_logging import flat_config, set_figures, set_names
from diffexpand.manifest import append_manifest
from diffexpand.preview import contact_sheet


def _set(folder, names=("T-shirt/top", "Trouser", "Ankle boot"), per_class=3, with_names=True):
    (folder / "images").mkdir(parents=True)
    records = []
    for label, name in enumerate(names):
        for k in range(per_class):
            file_name = f"images/{label}_{k}.png"
            Image.new("RGB", (16, 16), (40 * label + 10 * k, 100, 200)).save(folder / file_name)
            record = {"file_name": file_name, "label": label, "id": f"{label}_{k}"}
            records.append(record | ({"class_name": name} if with_names else {}))
    append_manifest(folder, records)
    return folder


def _ink_per_row(margin: np.ndarray, rows: int, tile: int, pad: int) -> list[int]:
    """Dark pixels in each row's band of the name margin."""
    return [int((margin[pad + r * (tile + pad) : (r + 1) * (tile + pad)] < 128).sum()) for r in range(rows)]


def test_contact_sheet_names_each_row_left_of_it_and_keeps_the_plain_sheet(tmp_path):
    folder = _set(tmp_path / "syn")
    plain = contact_sheet(folder, per_class=2, tile=24)  # the existing call: the image grid only
    assert plain.size == (2 * (24 + 2) + 2, 3 * (24 + 2) + 2)

    named = np.asarray(contact_sheet(folder, per_class=2, tile=24, label_rows=True))
    margin = named.shape[1] - plain.width
    assert margin > 20  # room for "T-shirt/top" in the default font
    assert np.array_equal(named[:, margin:], np.asarray(plain))  # the grid is untouched, only shifted
    ink = _ink_per_row(named[:, :margin].min(-1), 3, 24, 2)
    assert all(n > 10 for n in ink)  # a name on every row
    assert ink[0] > ink[1]  # "T-shirt/top" is longer than "Trouser": the names are the records' own


def test_contact_sheet_names_come_from_the_caller_or_the_label(tmp_path):
    folder = _set(tmp_path / "syn", with_names=False)
    grid_width = contact_sheet(folder, per_class=1, tile=24).width
    numbers = np.asarray(contact_sheet(folder, per_class=1, tile=24, label_rows=True))  # "0", "1", "2"
    given = contact_sheet(
        folder, per_class=1, tile=24, label_rows=True, class_names=["a", "b", "a long name"]
    )
    assert all(n > 0 for n in _ink_per_row(numbers[:, : numbers.shape[1] - grid_width].min(-1), 3, 24, 2))
    assert given.width > numbers.shape[1]  # the margin fits the longest given name
    assert contact_sheet(tmp_path / "empty") is None


def test_set_figures_read_what_the_set_metrics_callback_writes(tmp_path):
    """callbacks/set_metrics.py writes `evaluate_set`'s result: its scalars become the run's figures."""
    from diffexpand.evaluation.synthetic_quality import evaluate_set
    from diffexpand.oracle_cnn import OracleCNN
    from diffexpand.paths import DEFAULT_ORACLE

    folder = _set(tmp_path / "syn")
    result = evaluate_set(folder, OracleCNN.load(DEFAULT_ORACLE))
    (folder / "set_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    figures = set_figures(folder)
    assert figures == {
        "images": 9,
        "faithfulness": result["oracle"]["faithfulness"],
        "diversity": result["oracle"]["diversity"],
    }
    # the other metrics' means, when the callback measured them
    result |= {
        "clip_score": {"mean": 0.31, "per_class": {}},
        "lpips_diversity": {"mean": 0.2, "per_class": {}},
    }
    (folder / "set_metrics.json").write_text(json.dumps(result))
    assert set_figures(folder)["clip_score"] == 0.31 and set_figures(folder)["lpips_diversity"] == 0.2
    assert set_figures(tmp_path) == {}  # no file: nothing to attach


def test_config_is_flattened_to_the_command_line_keys_with_types_kept(tmp_path):
    from jsonargparse import Namespace

    # as LightningCLI resolves it: a dict-typed setting keeps command-line text ("2"), the rest is typed
    config = Namespace(seed_everything=0, data=Namespace(init_args=Namespace(
        p=0.5, real={"shots": "2", "dataset": "cub", "reader_args": {"scale": "1e-4"}}, synthetic=[tmp_path],
    )))  # fmt: skip
    assert flat_config(config, "classify.") == {
        "classify.seed_everything": 0,
        "classify.data.init_args.p": 0.5,
        "classify.data.init_args.real.shots": 2,
        "classify.data.init_args.real.dataset": "cub",
        "classify.data.init_args.real.reader_args.scale": 1e-4,
        "classify.data.init_args.synthetic": [str(tmp_path)],
    }
    assert set_names(["a/syn", "b/syn", "c/other"]) == ["a_syn", "b_syn", "other"]
