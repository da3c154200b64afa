"""Test-wide hygiene: offline hub, offline W&B, no network, tiny models built once per run."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import tempfile

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
# Runs of shipped configs whose W&B folder a test does not choose go here, not into the checkout.
os.environ["WANDB_DIR"] = tempfile.mkdtemp(prefix="diffexpand-test-wandb-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (`make test` runs one worker per core) each worker keeps to its share of the cores:
# torch's default of one thread per core in every worker oversubscribes the machine, which on a 2-core
# machine made steps several times slower. Subprocesses the tests start inherit the same share.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _share = str(max(1, _cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = _share
    import torch

    torch.set_num_threads(int(_share))


class NetworkAccessError(RuntimeError):
    pass


def _is_local(address) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX path
        return True
    host = address[0]
    if host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded(real):
    def connect(self, address):
        if not _is_local(address):
            raise NetworkAccessError(f"test tried to open a network connection to {address!r}")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that connects anywhere but loopback (DDP on one machine stays allowed)."""
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A randomly initialised tiny SD stack saved once in diffusers layout."""
    from diffexpand.models import build_tiny_sd

    folder = tmp_path_factory.mktemp("tiny-sd")
    build_tiny_sd().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sd(tiny_sd_dir):
    from diffexpand.models import load_sd_components

    return load_sd_components(tiny_sd_dir)


@pytest.fixture(scope="session")
def tiny_concepts(tiny_sd_dir, tmp_path_factory):
    """A concept folder for Fashion-MNIST's ten classes, learned for two steps on the tiny stack."""
    import lightning as L

    from datamodules.labeled import LabeledImageDataModule
    from lightning_modules.concept import ConceptLearner

    out = tmp_path_factory.mktemp("tiny-concepts")
    trainer = L.Trainer(
        max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path_factory.mktemp("concept-run"),
    )  # fmt: skip
    model = ConceptLearner(pretrained=str(tiny_sd_dir), lora_rank=4, output_dir=str(out))
    trainer.fit(model, LabeledImageDataModule(dataset="fashion_mnist", shots=2, batch_size=4))
    return out


@pytest.fixture(autouse=True)
def _no_wandb_run_outlives_its_test():
    """A W&B run left open (a test that stops a run half-way) would be joined by the next test's logger
    and its files would land in that old run's folder: close it after each test."""
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
