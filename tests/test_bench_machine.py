"""Where a benchmark classifier run was measured: the machine summary, its record beside the run's figures,
and the report's warning when the runs it compares come from more than one machine."""

import json

import pytest
import torch

from benchmarks import tiny_benchmark
from benchmarks.bench_protocol import PROFILES
from benchmarks.bench_report import UNRECORDED, machine_lines
from benchmarks.machine import cpu_model, machine_summary


def test_the_summary_names_the_cpu_its_vector_instructions_threads_kernel_settings_and_torch(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    summary = machine_summary()
    assert torch.__version__ in summary and torch.backends.cpu.get_cpu_capability() in summary
    assert "ONEDNN_MAX_CPU_ISA" not in summary
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        assert machine_summary() != summary  # another thread count splits reductions another way
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in machine_summary()


def test_the_cpu_model_comes_from_cpuinfo_or_else_platform(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 7B13"
    assert cpu_model(tmp_path / "missing")  # no /proc: platform's name, never empty


def test_a_classifier_record_keeps_the_machine_it_was_measured_on(tmp_path):
    fast = ["--trainer.max_epochs=1", "--trainer.limit_test_batches=1", "--trainer.limit_val_batches=1",
            "--trainer.logger=false", "--model.init_args.backbone=resnet10t"]  # fmt: skip
    tiny_benchmark.classify(tmp_path, "Original", None, "replace", 1, 0, fast, "validation")
    record = json.loads((tmp_path / "classifier/validation/Original-1shot-seed0.json").read_text())
    assert record["machine"] == machine_summary() and "machine" not in record["settings"]
    assert tiny_benchmark.machine_of(tmp_path, "Original", "replace", 1, 0, "validation") == machine_summary()
    assert tiny_benchmark.machine_of(tmp_path, "Diff-II", "replace", 1, 0, "validation") is None


def test_the_report_says_all_runs_came_from_this_machine_or_warns_that_they_mix_machines():
    here, other = "CPU A, AVX512, 2 threads, torch 2", "CPU B, AVX2, 2 threads, torch 2"
    same = {("Original", 5): {"machines": [here, here]}, ("Diff-II", 5): {"machines": [here]}}
    assert machine_lines(same, here) == ["Classifier runs: all 3 measured on this machine.", ""]
    assert machine_lines({("Original", 5): {"acc": {}}}, here) == []  # results made before machines
    mixed = {("Original", 5): {"machines": [here, other]}, ("Diff-II", 5): {"machines": [None, here]}}
    text = "\n".join(machine_lines(mixed, here))
    assert f"this machine ({here}): 2" in text and f"{other}: 1" in text and f"{UNRECORDED}: 1" in text
    assert "These runs mix machines" in text
    elsewhere = "\n".join(machine_lines({("Original", 5): {"machines": [other, other]}}, here))
    assert f"{other}: 2" in elsewhere and "mix machines" not in elsewhere  # a copied --out, one machine


@pytest.mark.parametrize("mixed", [False, True])
def test_a_benchmark_run_reusing_another_machines_result_warns_in_its_report(tmp_path, monkeypatch, mixed):
    """Through main: one row's run recorded on another machine makes the report warn; all on this one
    does not."""
    monkeypatch.setattr(tiny_benchmark, "classify", lambda *args, **kw: 0.6)
    monkeypatch.setattr(tiny_benchmark, "per_class_of", lambda *args: None)
    fake_set = {"folder": "sets/x", "faithfulness": 0.9, "diversity": 0.5, "images_per_s": 1.0}
    monkeypatch.setattr(tiny_benchmark, "make_set", lambda *args: fake_set)
    monkeypatch.setattr(tiny_benchmark, "make_ceiling_set", lambda *args: fake_set)
    monkeypatch.setattr(tiny_benchmark, "ensure_concepts", lambda *args: tmp_path)

    def machine_of(out, row, *args):
        return "CPU elsewhere" if mixed and row == "Diff-II" else machine_summary()

    monkeypatch.setattr(tiny_benchmark, "machine_of", machine_of)
    tiny_benchmark.main(["--out", str(tmp_path)])
    text = (tmp_path / "report.md").read_text()
    assert ("These runs mix machines" in text) is mixed
    if not mixed:
        assert f"Classifier runs: all {len(PROFILES['quick']['rows'])} measured on this machine." in text
