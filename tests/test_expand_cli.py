"""What `expand.py` offers on the command line: only `predict`, a list of the methods and their
settings, and errors of ours as one line (traceback on request)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffexpand.cli import purposeful_error, raised_on_purpose, run_with_clear_errors
from diffexpand.methods import available_methods, method_class
from diffexpand.methods.catalog import describe_methods

REPO = Path(__file__).resolve().parent.parent


def run_expand(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "expand.py"), *args],
        capture_output=True,
        text=True,
        env=os.environ | (env or {}),
        timeout=300,
    )


def test_only_predict_is_offered_and_no_optimizer_options():
    result = run_expand("fit")
    assert result.returncode == 2 and "choose from 'predict'" in result.stderr
    helped = run_expand("predict", "--help")
    assert helped.returncode == 0
    assert "--optimizer" not in helped.stdout and "--lr_scheduler" not in helped.stdout
    assert "--output_dir" in helped.stdout


def test_methods_lists_every_registered_method_and_each_setting():
    listing = describe_methods()
    for name in available_methods():
        assert f"  {name} " in listing and f"diffexpand.methods.{method_class(name).__name__}" in listing
    for name in available_methods():
        cls = method_class(name)
        text = describe_methods([cls.__name__])  # by class name as well as registry name
        for field in dataclasses.fields(cls):
            if field.init:
                assert f"  {field.name} (" in text, (name, field.name)
    diffii = describe_methods(["diffii"])
    assert "split_ratio (float, default 0.3)" in diffii and "plain prompt" in diffii


def test_methods_command_and_its_misspelling():
    listed = run_expand("methods")
    assert listed.returncode == 0 and "distdiff" in listed.stdout
    wrong = run_expand("methods", "distdif")
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "did you mean 'distdiff'?" in wrong.stderr


def test_an_error_of_ours_is_one_line_and_its_traceback_comes_on_request(tmp_path):
    args = ["predict", "--model.init_args.concepts", str(tmp_path / "missing"), "--trainer.logger=false"]
    plain = run_expand(*args)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    errors = [line for line in plain.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"concept folder {tmp_path / 'missing'} does not exist" in errors[0]
    assert plain.stderr.rstrip().splitlines()[-1] == errors[0], "the message is not the last line"
    verbose = run_expand(*args, env={"DIFFEXPAND_TRACEBACK": "1"})
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr and "FileNotFoundError" in verbose.stderr


def test_library_errors_keep_their_traceback():
    # (an error of ours that a library wraps, as jsonargparse does, is the concept-folder test above)
    with pytest.raises(json.JSONDecodeError):
        run_with_clear_errors(lambda: json.loads("{"))  # raised inside the json package
    try:
        json.loads("{")
    except json.JSONDecodeError as err:
        assert not raised_on_purpose(err) and purposeful_error(err) is None


def test_known_noise_is_silenced_by_message_and_other_warnings_still_reach_the_user():
    import warnings

    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    from diffexpand.cli import silence_known_noise

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_noise()
        warnings.warn(
            "Found 401 module(s) in eval mode at the start of training. This may lead to …",
            PossibleUserWarning,
            stacklevel=1,
        )
        warnings.warn(
            "The number of training batches (3) is smaller than …", PossibleUserWarning, stacklevel=1
        )
    assert [str(w.message)[:22] for w in caught] == ["The number of training"]
