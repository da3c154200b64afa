"""The divergence guard of concept learning: a run whose smoothed loss runs away at the end exports the
weights of its lowest point (and says so); a steady run exports its last weights; resume keeps the guard's
memory."""

import math
import random

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from datamodules.labeled import LabeledImageDataModule
from diffexpand.training.loss_watch import LossWatch
from lightning_modules.concept import ConceptLearner


def _feed(watch, losses):
    copies = []

    def snapshot():
        copies.append(step)
        return {"w": torch.tensor([float(step)])}

    for step, loss in enumerate(losses, start=1):
        watch.observe(step, loss, snapshot)
    return copies


def _noisy(level, n, rng):  # single-step diffusion losses scatter widely around their level
    return [level * rng.uniform(0.5, 1.5) for _ in range(n)]


def test_a_steady_noisy_loss_is_not_divergence():
    watch = LossWatch()
    copies = _feed(watch, _noisy(0.085, 2000, random.Random(0)))
    assert not watch.diverged
    assert copies and all(s % 50 == 0 and s >= 200 for s in copies)  # only at checks, after the start


def test_a_loss_that_runs_away_at_the_end_falls_back_to_its_lowest_point():
    rng = random.Random(1)
    watch = LossWatch()
    _feed(watch, _noisy(0.085, 1600, rng) + _noisy(0.2, 400, rng))
    assert watch.diverged
    assert 200 <= watch.best_step <= 1650
    assert watch.best_state["w"].item() == watch.best_step
    assert watch.smoothed > 2 * watch.best_loss


def test_a_non_finite_loss_counts_as_divergence_without_poisoning_the_average():
    watch = LossWatch(start_after=0, check_every=1)
    _feed(watch, [0.1, 0.1, math.nan, 0.1])
    assert watch.diverged and math.isfinite(watch.smoothed)


def test_nothing_to_fall_back_on_before_the_first_check():
    watch = LossWatch()
    _feed(watch, [0.1] * 10 + [5.0] * 10)
    assert not watch.diverged  # no copy yet: the last weights are all there is


def test_state_dict_round_trip_continues_exactly():
    losses = _noisy(0.085, 1200, random.Random(2)) + _noisy(0.3, 300, random.Random(3))
    straight = LossWatch()
    _feed(straight, losses)
    first = LossWatch()
    _feed(first, losses[:700])
    resumed = LossWatch()
    resumed.load_state_dict(first.state_dict())
    for step, loss in enumerate(losses[700:], start=701):
        resumed.observe(step, loss, lambda s=step: {"w": torch.tensor([float(s)])})
    assert resumed.smoothed == pytest.approx(straight.smoothed, rel=1e-12)
    assert (resumed.best_step, resumed.diverged) == (straight.best_step, straight.diverged)


@pytest.mark.parametrize("kwargs", [{"smoothing": 1.0}, {"check_every": 0}, {"tolerance": 1.0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        LossWatch(**kwargs)


class _RunawayLearner(ConceptLearner):
    """Reports a loss 100x larger from its third step on, as a run that blows up would."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * (100.0 if self.global_step >= 2 else 1.0)


def _fit(cls, tiny_sd_dir, root, max_steps, output_dir, **kwargs):
    L.seed_everything(0)
    trainer = L.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False,
                        default_root_dir=root)  # fmt: skip
    model = cls(pretrained=str(tiny_sd_dir), embedding_lr=1e-2, lora_lr=1e-3, lora_rank=4,
                output_dir=str(output_dir), seed=0, **kwargs)  # fmt: skip
    if model.loss_watch is not None:  # check from the first step: these runs are a few steps long
        model.loss_watch = LossWatch(start_after=1, check_every=1, tolerance=model.loss_watch.tolerance)
    trainer.fit(model, LabeledImageDataModule(dataset="fashion_mnist", shots=2, batch_size=4, image_size=32))
    return model


def _exported_rows(folder):
    """Every number the concept folder holds: token rows, then LoRA weights."""
    files = sorted((folder / "embeddings").glob("*.safetensors")) + [
        folder / "pytorch_lora_weights.safetensors"
    ]
    return torch.cat([v.flatten() for f in files for _, v in sorted(load_file(f).items())])


def test_a_runaway_concept_run_exports_the_weights_of_its_lowest_point(tiny_sd_dir, tmp_path):
    unguarded = {"divergence_tolerance": None}
    # the reference: the same run stopped after one update, the lowest point the guard can see (the
    # loss of the weights after 1 update, checked from step 1 on)
    one_step = _fit(_RunawayLearner, tiny_sd_dir, tmp_path / "a", 1, tmp_path / "one", **unguarded)
    with pytest.warns(UserWarning, match="concept learning diverged.*step 1\\)"):
        runaway = _fit(
            _RunawayLearner, tiny_sd_dir, tmp_path / "b", 5, tmp_path / "runaway", divergence_tolerance=1.25
        )
    assert runaway.exported_step == 1 and one_step.exported_step == 1
    torch.testing.assert_close(_exported_rows(tmp_path / "runaway"), _exported_rows(tmp_path / "one"))
    # ... and without the guard the same run exports its last (step 5) weights
    last = _fit(_RunawayLearner, tiny_sd_dir, tmp_path / "c", 5, tmp_path / "last", **unguarded)
    assert last.exported_step == 5
    assert not torch.allclose(_exported_rows(tmp_path / "last"), _exported_rows(tmp_path / "one"))


def test_a_resumed_concept_run_keeps_the_guards_memory(tiny_sd_dir, tmp_path):
    L.seed_everything(0)
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3)
    trainer = L.Trainer(max_steps=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[checkpoints], default_root_dir=tmp_path)  # fmt: skip
    model = ConceptLearner(
        pretrained=str(tiny_sd_dir), lora_rank=4, output_dir="", seed=0, divergence_tolerance=1.25
    )
    model.loss_watch = LossWatch(start_after=1, check_every=1)
    trainer.fit(model, LabeledImageDataModule(dataset="fashion_mnist", shots=2, batch_size=4, image_size=32))
    ckpt = next((tmp_path / "ckpt").glob("*.ckpt"))
    saved = torch.load(ckpt, weights_only=True, map_location="cpu")["loss_watch"]  # plain tensors only
    fresh = ConceptLearner(
        pretrained=str(tiny_sd_dir), lora_rank=4, output_dir="", seed=0, divergence_tolerance=1.25
    )
    fresh.trainer = trainer  # configure_model reads the classes from the datamodule
    fresh.configure_model()
    fresh.on_load_checkpoint({"loss_watch": saved})
    assert (fresh.loss_watch.best_step, fresh.loss_watch.smoothed) == (
        model.loss_watch.best_step,
        model.loss_watch.smoothed,
    )
    bad = {**saved, "best_state": {"concepts.weight": torch.zeros(1)}}
    with pytest.raises(ValueError, match="does not fit this model"):
        fresh.on_load_checkpoint({"loss_watch": bad})
