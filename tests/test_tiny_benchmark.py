"""The benchmark report: table rows, gains, CSV and the split-ratio plot from measured results."""

import csv

from benchmarks.tiny_benchmark import PROFILES, mean_std, write_report


def _set(f, d, s):
    return {"faithfulness": f, "diversity": d, "images_per_s": s, "folder": "x"}


def test_report_table_gains_csv_and_plot(tmp_path):
    profile = dict(PROFILES["quick"], seeds=[0, 1])
    results = {
        ("Original", 5): {"acc": [0.60, 0.62], "sets": []},
        ("txt2img", 5): {"acc": [0.50, 0.52], "sets": [_set(0.2, 0.6, 9.0), _set(0.4, 0.8, 11.0)]},
        ("Diff-II", 5): {"acc": [0.64, 0.66], "sets": [_set(0.9, 0.4, 8.0)] * 2},
        ("DistDiff", 5): {"acc": [0.61, 0.63], "sets": [_set(0.7, 0.6, 5.0)] * 2},
    }
    curve = [{"split_ratio": s, "faithfulness": 1 - s / 2, "diversity": 0.4 + s / 4} for s in (0.0, 0.5, 1.0)]
    text = write_report(tmp_path, profile | {"curve": True}, results, curve, 120.0, "test")
    assert "| Diff-II | 65.00 ± 1.41 | +4.00 | 0.900 | 0.400 | 8.00 |" in text
    assert "| txt2img | 51.00 ± 1.41 | -10.00 | 0.300 | 0.700 | 10.00 |" in text
    assert "| Original | 61.00 ± 1.41 | — |" in text and "wall time 2.0 min" in text
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["method"] for r in rows] == ["Original", "txt2img", "Diff-II", "DistDiff"]
    assert abs(float(rows[2]["gain"]) - 0.04) < 1e-9
    assert (tmp_path / "split_ratio.png").stat().st_size > 0 and "split_ratio.png" in text
    assert mean_std([0.5]) == "50.00"
