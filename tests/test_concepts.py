"""Concept learner: what trains, exact resume, diffusers-format outputs, class-match checks."""

import lightning as L
import pytest
import torch

from datamodules.labeled import LabeledImageDataModule
from diffexpand.concepts import ConceptMismatchError, apply_concepts, read_concepts
from diffexpand.models import load_sd_components
from diffexpand.models.text import encode_prompts
from lightning_modules.concept import ConceptLearner


def _fit(tiny_sd_dir, tmp_path, max_steps, ckpt_path=None, checkpoint_every=None, output_dir=None):
    L.seed_everything(0)
    callbacks = []
    if checkpoint_every:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(
            dirpath=tmp_path / "ckpt", every_n_train_steps=checkpoint_every, save_top_k=-1))  # fmt: skip
    trainer = L.Trainer(
        max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks, enable_checkpointing=bool(checkpoint_every), default_root_dir=tmp_path,
    )  # fmt: skip
    model = ConceptLearner(pretrained=str(tiny_sd_dir), embedding_lr=1e-2, lora_lr=1e-3, lora_rank=4,
                           output_dir=str(output_dir) if output_dir else "", seed=0)  # fmt: skip
    dm = LabeledImageDataModule(dataset="fashion_mnist", shots=2, batch_size=4, image_size=32)
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return model


def _trained_state(model):
    state = {"concepts": model.concepts.weight.detach().clone()}
    state |= {n: p.detach().clone() for n, p in model.unet.named_parameters() if "lora_" in n}
    return state


@pytest.fixture(scope="module")
def trained(tiny_sd_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("concepts")
    model = _fit(tiny_sd_dir, tmp_path_factory.mktemp("run"), max_steps=4, output_dir=out)
    return model, out


def test_only_new_rows_and_lora_change(tiny_sd_dir, trained):
    model, _ = trained
    base = load_sd_components(tiny_sd_dir)
    # Frozen base weights are unchanged (LoRA wraps them as base_layer.*).
    base_unet = base.unet.state_dict()
    for name, value in model.unet.state_dict().items():
        if "lora_" in name:
            continue
        torch.testing.assert_close(value, base_unet[name.replace("base_layer.", "")], rtol=0, atol=0)
    old_table = base.text_encoder.get_input_embeddings().weight
    new_table = model.text_encoder.get_input_embeddings().weight
    torch.testing.assert_close(new_table[: len(old_table)], old_table, rtol=0, atol=0)
    for name, value in base.vae.state_dict().items():
        torch.testing.assert_close(model.vae.state_dict()[name], value, rtol=0, atol=0)
    # ...while the new rows and the LoRA did move.
    lora_b = [p for n, p in model.unet.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)
    # class 0 (T-shirt/top) started at the embedding of its metaclass word "top"
    start = old_table[base.tokenizer("top", add_special_tokens=False).input_ids].mean(0)
    assert not torch.allclose(model.concepts.weight[0, 0], start)


def test_resume_from_checkpoint_equals_uninterrupted(tiny_sd_dir, tmp_path):
    straight = _trained_state(_fit(tiny_sd_dir, tmp_path / "a", max_steps=4))
    _fit(tiny_sd_dir, tmp_path / "b", max_steps=2, checkpoint_every=2)
    ckpt = next((tmp_path / "b" / "ckpt").glob("*.ckpt"))
    saved = torch.load(ckpt, weights_only=True, map_location="cpu")["state_dict"]
    assert all("lora_" in k or k.startswith("concepts.") for k in saved)  # only what was trained
    assert sum(v.numel() for v in saved.values()) < 100_000
    resumed = _trained_state(_fit(tiny_sd_dir, tmp_path / "b", max_steps=4, ckpt_path=str(ckpt)))
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)


def test_outputs_load_in_stock_diffusers_and_tokens_change_the_image(tiny_sd_dir, trained):
    from diffusers import StableDiffusionPipeline

    _, folder = trained
    concepts = read_concepts(folder)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, dtype=torch.float32)
    for c in range(len(concepts.class_names)):
        pipe.load_textual_inversion(str(folder / f"embeddings/class_{c}.safetensors"))
    pipe.load_lora_weights(str(folder))

    def generate(prompt):
        g = torch.Generator().manual_seed(0)
        return pipe(prompt, num_inference_steps=3, height=32, width=32, generator=g, output_type="pt").images

    plain = generate("a photo of a shoe")
    learned = generate(concepts.prompt(7))  # "a photo of a <class_7> shoe"
    assert "<class_7>" in concepts.prompt(7)
    assert (plain - learned).abs().mean() > 1e-4


def test_apply_concepts_reproduces_the_training_text_embeddings(tiny_sd_dir, trained):
    model, folder = trained
    parts = load_sd_components(tiny_sd_dir)
    concepts = apply_concepts(parts, folder, class_names=model.class_names)
    prompts = [concepts.prompt(c) for c in (0, 5, 9)]
    ours = encode_prompts(parts.tokenizer, parts.text_encoder, prompts)
    reference = encode_prompts(model.parts.tokenizer, model.text_encoder, prompts)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_concept_folder_for_other_classes_is_refused(tiny_sd_dir, trained):
    _, folder = trained
    parts = load_sd_components(tiny_sd_dir)
    with pytest.raises(ConceptMismatchError, match="do not match"):
        apply_concepts(parts, folder, class_names=["cat", "dog"])
    names = read_concepts(folder).class_names
    with pytest.raises(ConceptMismatchError, match="different order"):
        read_concepts(folder).check_matches(list(reversed(names)))


def test_bad_settings_are_rejected_before_loading():
    with pytest.raises(ValueError, match="init_from"):
        ConceptLearner(init_from="random")
    with pytest.raises(ValueError, match="tokens_per_class"):
        ConceptLearner(tokens_per_class=0)


def test_trainable_parameters_stay_fp32_under_mixed_precision(tiny_sd_dir, tmp_path):
    trainer = L.Trainer(
        max_steps=2, precision="bf16-mixed", logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip
    model = ConceptLearner(pretrained=str(tiny_sd_dir), dtype="bfloat16", lora_rank=4, output_dir="")
    trainer.fit(model, LabeledImageDataModule(dataset="fashion_mnist", shots=1, batch_size=2))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert model.unet.conv_in.weight.dtype == torch.bfloat16  # the frozen base keeps the chosen dtype
    assert torch.isfinite(model.concepts.weight).all()


def test_each_ddp_rank_draws_its_own_noise_and_a_rerun_draws_the_same(trained, monkeypatch):
    import lightning_modules.concept as concept

    model, _ = trained
    seeds, losses = [], []
    original = concept.noise_prediction_loss

    def recording(*args, generator, **kwargs):
        seeds.append(generator.initial_seed())
        return original(*args, generator=generator, **kwargs)

    monkeypatch.setattr(concept, "noise_prediction_loss", recording)
    monkeypatch.setattr(model, "log", lambda *a, **k: None)
    g = torch.Generator().manual_seed(0)
    batch = {"pixel_values": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, "label": torch.tensor([0, 1])}
    for rank in (0, 1, 1, 0):  # two simulated ranks at the same step, each run twice (a resumed run)
        monkeypatch.setattr(type(model), "global_rank", property(lambda self, r=rank: r))
        with torch.no_grad():
            losses.append(float(model.training_step(batch, 0)))
    step = model.global_step
    assert seeds[:2] == [concept.step_seed(0, step, 0), concept.step_seed(0, step, 1)]
    assert seeds[0] == seeds[3] != seeds[1] == seeds[2]
    assert losses[0] == losses[3] != losses[1] == losses[2]  # other noise and timesteps on rank 1
    # rank 0 keeps the single-device seed, so one-device runs are unchanged
    assert concept.step_seed(0, step, 0) == concept.step_seed(0, step)
