"""The faithfulness-diversity benchmark: each sweep point is one set made with that setting on the command
line; the report names the combination's points no parent point dominates, and says so when none."""

import csv

import pytest

from benchmarks import fidelity_diversity as fd


def _point(method, f, d, setting="lambda_range", value="full"):
    return {"method": method, "setting": setting, "value": value, "faithfulness": f, "diversity": d,
            "images_per_s": 1.0}  # fmt: skip


def test_a_combination_point_counts_only_when_no_parent_point_is_as_faithful_and_as_diverse():
    parents = [_point("Diff-II", 0.90, 0.45), _point("DistDiff", 0.65, 0.70, "step_size", "10.0")]
    beyond = _point("Diff-II+DistDiff", 0.85, 0.55, value="[0.0,0.5]")  # more diverse than Diff-II at 0.85+
    dominated = _point("Diff-II+DistDiff", 0.88, 0.44)  # Diff-II is both more faithful and more diverse
    assert fd.unreached_points([*parents, beyond, dominated]) == [beyond]
    assert fd.unreached_points([beyond]) == []  # nothing to compare with


def test_main_makes_one_set_per_value_with_that_setting_and_writes_the_report(tmp_path, monkeypatch):
    made = []

    def fake_make_set(out, method, shots, seed, concepts, extra):
        made.append((out, method, extra))
        value = extra[-1].split("=", 1)[1]
        # the further along the sweep, the more diverse and the less faithful
        position = len([m for m in made if m[1] == method])
        return {"faithfulness": 0.95 - 0.05 * position, "diversity": 0.40 + 0.05 * position,
                "images_per_s": 2.0, "value": value}  # fmt: skip

    monkeypatch.setattr(fd, "make_set", fake_make_set)
    monkeypatch.setattr(fd, "ensure_concepts", lambda out, shots, seed, extra: tmp_path / "concepts")
    bound = f"{fd.METHOD_ARG}.bound=0.5"
    points = fd.main(["--out", str(tmp_path), "--sweeps", "Diff-II: lambda", "Diff-II+DistDiff: rho",
                      "--expand-args=--model.init_args.method.init_args.guidance_scale=3.0",
                      f"--method-args=diffii_distdiff:{bound}"])  # fmt: skip

    lambdas = [m for m in made if m[1] == "diffii"]
    assert [m[2][-1] for m in lambdas] == [
        f"{fd.METHOD_ARG}.lambda_range=interpolation",
        f"{fd.METHOD_ARG}.lambda_range=[0.0,0.1]",
        f"{fd.METHOD_ARG}.lambda_range=[0.0,0.25]",
        f"{fd.METHOD_ARG}.lambda_range=[0.0,0.5]",
        f"{fd.METHOD_ARG}.lambda_range=full",
    ]
    for _, _, extra in made:  # the user's args reach every set; every set has its own folder, one cache
        assert f"{fd.METHOD_ARG}.guidance_scale=3.0" in extra
        assert extra[0] == f"--data.init_args.cache_dir={tmp_path / 'cache'}"
    assert [bound in m[2] for m in made] == [m[1] == "diffii_distdiff" for m in made]  # its method only
    assert len({m[0] for m in made}) == len(made) == len(fd.LAMBDA_RANGES) + len(fd.STEP_SIZES)
    assert len(points) == len(made)

    rows = list(csv.DictReader((tmp_path / "points.csv").open()))
    assert [r["value"] for r in rows[:2]] == ["interpolation", "[0.0,0.1]"]
    assert (tmp_path / "fidelity_diversity.png").stat().st_size > 0
    text = (tmp_path / "report.md").read_text()
    assert "| Diff-II+DistDiff | step_size | 100.0 | 0.750 | 0.600 | 2.00 |" in text
    # the combination's points lie on Diff-II's own line here: each is dominated by the Diff-II point at
    # the same position, so the report must not claim a point the parents do not reach
    assert "Every point of Diff-II+DistDiff is dominated" in text


def test_a_method_argument_for_a_method_no_sweep_makes_is_refused():
    with pytest.raises(SystemExit, match="METHOD:--key=value"):
        fd.method_args(["dafusion:--model.init_args.method.init_args.strength=0.3"])
    with pytest.raises(SystemExit, match="METHOD:--key=value"):
        fd.method_args(["diffii_distdiff=--x=1"])
    assert fd.method_args(["distdiff:--a=1", "distdiff:--b=2"]) == {"distdiff": ["--a=1", "--b=2"]}
