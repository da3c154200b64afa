"""Concept learner: what trains, exact resume, diffusers-format outputs, class-match checks; the
committed concepts in a stock diffusers pipeline; concepts.json read as untrusted input."""

import json
import shutil

import lightning as L
import pytest
import torch

from datamodules.labeled import LabeledImageDataModule
from diffexpand.concepts import (
    ConceptFolderError,
    ConceptMismatchError,
    apply_concepts,
    read_concepts,
    rewrite_concepts_json,
)
from diffexpand.models import load_sd_components
from diffexpand.models.text import encode_prompts, tokenize_prompts
from diffexpand.paths import DEFAULT_PRIOR, REPO_ROOT
from lightning_modules.concept import ConceptLearner

COMMITTED = REPO_ROOT / "assets/concepts/fashion_mnist-5shot-seed0"


def _fit(
    tiny_sd_dir,
    tmp_path,
    max_steps,
    ckpt_path=None,
    checkpoint_every=None,
    output_dir=None,
    lora_rank=4,
    **settings,
):
    L.seed_everything(0)
    callbacks = []
    if checkpoint_every:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(
            dirpath=tmp_path / "ckpt", every_n_train_steps=checkpoint_every, save_top_k=-1))  # fmt: skip
    trainer = L.Trainer(
        max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks, enable_checkpointing=bool(checkpoint_every), default_root_dir=tmp_path,
    )  # fmt: skip
    model = ConceptLearner(pretrained=str(tiny_sd_dir), embedding_lr=1e-2, lora_lr=1e-3, lora_rank=lora_rank,
                           output_dir=str(output_dir) if output_dir else "", seed=0, **settings)  # fmt: skip
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


def test_lora_rank_zero_is_textual_inversion_on_a_frozen_unet(tiny_sd_dir, trained, tmp_path):
    _, with_lora = trained
    out = tmp_path / "ti"
    shutil.copytree(with_lora, out)  # an earlier export's LoRA in the same folder must not survive
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    model = _fit(tiny_sd_dir, tmp_path / "run", max_steps=3, output_dir=out, lora_rank=0)
    assert not any("lora_" in n for n, _ in model.unet.named_parameters())
    base = load_sd_components(tiny_sd_dir)
    for name, value in base.unet.state_dict().items():
        torch.testing.assert_close(model.unet.state_dict()[name], value, rtol=0, atol=0)
    start = base.text_encoder.get_input_embeddings().weight[
        base.tokenizer("top", add_special_tokens=False).input_ids
    ]
    assert not torch.allclose(model.concepts.weight[0, 0], start.mean(0))  # the tokens did learn
    assert not (out / "pytorch_lora_weights.safetensors").exists()
    parts = load_sd_components(tiny_sd_dir)
    apply_concepts(parts, out)  # tokens only: the UNet stays the prior's
    assert not any("lora_" in n for n, _ in parts.unet.named_parameters())
    with pytest.raises(ValueError, match="lora_rank must be >= 0"):
        ConceptLearner(pretrained=str(tiny_sd_dir), lora_rank=-1)


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


def test_the_prior_preservation_loss_trains_the_lora_and_a_resumed_run_repeats_it(tiny_sd_dir, tmp_path):
    """DreamBooth's prior preservation (tests/test_prior_preservation.py has its parts): it changes what
    trains, and a run resumed with a trained LoRA draws the same class samples (drawn with the LoRA off)."""
    preserve = {"prior_preservation_weight": 1.0, "class_samples_per_metaclass": 3, "class_sampling_steps": 2}
    plain = _trained_state(_fit(tiny_sd_dir, tmp_path / "plain", max_steps=3))
    model = _fit(tiny_sd_dir, tmp_path / "a", max_steps=3, **preserve)
    assert "train/prior_loss" in model.trainer.callback_metrics
    assert [len(pool) for pool in model.class_latents] == [3] * len(set(model.metaclasses))
    preserved = _trained_state(model)
    assert any(not torch.equal(plain[name], value) for name, value in preserved.items() if "lora_" in name)
    _fit(tiny_sd_dir, tmp_path / "b", max_steps=2, checkpoint_every=2, **preserve)
    ckpt = next((tmp_path / "b" / "ckpt").glob("*.ckpt"))
    resumed = _trained_state(_fit(tiny_sd_dir, tmp_path / "b", max_steps=3, ckpt_path=str(ckpt), **preserve))
    for name, value in preserved.items():
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
    learned = generate(concepts.stock_prompt(7))  # "a photo of a <class_7> shoe"
    assert "<class_7>" in concepts.stock_prompt(7)
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
    with pytest.raises(ValueError, match="prompt_template"):
        ConceptLearner(prompt_template="a photo of a {tokens.__class__} {metaclass}")


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


def test_committed_concepts_in_a_stock_pipeline_take_the_stock_prompt_as_our_prompt():
    """A stock pipeline writes a multi-vector token out itself: given `stock_prompt` it must reach the
    same token ids (and text embeddings) as our own tokenisation of `prompt`, for every class."""
    from diffusers import StableDiffusionPipeline

    meta = json.loads((COMMITTED / "concepts.json").read_text())
    concepts = read_concepts(COMMITTED)
    assert concepts.tokens_per_class == 4  # the case where the two forms differ
    pipe = StableDiffusionPipeline.from_pretrained(DEFAULT_PRIOR)  # as a user would: no dtype
    for c in meta["classes"]:
        pipe.load_textual_inversion(str(COMMITTED / c["embedding_file"]), token=c["tokens"][0])
    pipe.load_lora_weights(str(COMMITTED))
    ours = load_sd_components(DEFAULT_PRIOR)
    apply_concepts(ours, COMMITTED, class_names=concepts.class_names)  # the expansion engine's path

    for c in meta["classes"]:
        i = c["index"]
        assert c["stock_prompt"] == concepts.stock_prompt(i) and c["prompt"] == concepts.prompt(i)
        converted = pipe.maybe_convert_prompt(c["stock_prompt"], pipe.tokenizer)
        stock_ids = pipe.tokenizer(
            converted, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids  # fmt: skip
        our_ids = tokenize_prompts(ours.tokenizer, [concepts.prompt(i)])  # as ExpansionDataModule's prompts
        assert torch.equal(stock_ids, our_ids), c["name"]
        with torch.no_grad():
            torch.testing.assert_close(pipe.text_encoder(stock_ids)[0], ours.text_encoder(our_ids)[0])
        # our expanded form would be expanded once more by the stock pipeline: the reason for two forms
        assert pipe.maybe_convert_prompt(c["prompt"], pipe.tokenizer).count(f"<class_{i}>") == 16

    g = torch.Generator().manual_seed(0)
    out = pipe(meta["classes"][7]["stock_prompt"], num_inference_steps=2, height=32, width=32, generator=g,
               output_type="np")  # fmt: skip
    assert out.images.shape == (1, 32, 32, 3) and out.images.std() > 0


def _strip_new_fields(meta: dict) -> dict:
    """concepts.json as the learner wrote it before the stock prompts were added."""
    old = {k: meta[k] for k in ("base_model", "tokens_per_class", "prompt_template", "classes")}
    keep = ("index", "name", "tokens", "metaclass", "embedding_file")
    old["classes"] = [{k: c[k] for k in keep} for c in meta["classes"]]
    return old


def test_an_older_concepts_json_loads_and_migrates_to_the_committed_one(tmp_path):
    folder = shutil.copytree(COMMITTED, tmp_path / "concepts")
    committed_text = (COMMITTED / "concepts.json").read_text()
    (folder / "concepts.json").write_text(json.dumps(_strip_new_fields(json.loads(committed_text)), indent=2))
    old, new = read_concepts(folder), read_concepts(COMMITTED)
    assert [old.prompt(c) for c in range(10)] == [new.prompt(c) for c in range(10)]
    assert old.stock_prompt(7) == "a photo of a <class_7> shoe"

    from diffexpand.concepts.migrate import main

    main([str(folder)])
    assert (folder / "concepts.json").read_text() == committed_text  # the writer's output, byte for byte
    for path in COMMITTED.rglob("*.safetensors"):
        assert (folder / path.relative_to(COMMITTED)).read_bytes() == path.read_bytes()
    rewrite_concepts_json(folder)  # idempotent
    assert (folder / "concepts.json").read_text() == committed_text


def _edit(meta: dict, case: str) -> dict | str:
    c7 = meta["classes"][7]
    if case == "not json":
        return "{'classes': "
    if case == "template runs code":
        meta["prompt_template"] = "{tokens.__init__.__globals__} {metaclass}"
    elif case == "template without tokens":
        meta["prompt_template"] = "a photo of a {metaclass}"
    elif case == "template format spec":
        meta["prompt_template"] = "{tokens:>999999999} {metaclass}"
    elif case == "tokens per class":
        meta["tokens_per_class"] = True
    elif case == "index gap":
        c7["index"] = 12
    elif case == "tokens":
        c7["tokens"] = ["<class_7>", "<class_7>_1", "<class_7>_2", "<class_8>"]
    elif case == "stock prompt":
        c7["stock_prompt"] = "a photo of a <class_7> <class_7>_1 <class_7>_2 <class_7>_3 shoe"
    elif case == "stock template":
        meta["stock_prompt_template"] = "a photo of a {tokens} {metaclass}"
    elif case == "embedding path":
        c7["embedding_file"] = "../../../etc/passwd"
    elif case == "name":
        c7["name"] = ["Sneaker"]
    elif case == "classes":
        meta["classes"] = {"7": c7}
    return meta


BAD = {
    "not json": "not valid JSON",
    "template runs code": "must contain {tokens}",
    "template without tokens": "must contain {tokens}",
    "template format spec": "must contain {tokens}",
    "tokens per class": "tokens_per_class must be an integer",
    "index gap": "class indices must be 0",
    "tokens": r"classes\[7\]\.tokens must be",
    "stock prompt": r"classes\[7\]\.stock_prompt must be 'a photo of a <class_7> shoe'",
    "stock template": "stock_prompt_template",
    "embedding path": r"classes\[7\]\.embedding_file must be 'embeddings/class_7.safetensors'",
    "name": r"classes\[7\]\.name must be a non-empty string",
    "classes": "classes must be a non-empty list",
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_malformed_or_contradictory_concepts_json_is_refused_by_name(case, tmp_path):
    folder = shutil.copytree(COMMITTED, tmp_path / "concepts")
    edited = _edit(json.loads((COMMITTED / "concepts.json").read_text()), case)
    (folder / "concepts.json").write_text(edited if isinstance(edited, str) else json.dumps(edited))
    with pytest.raises(ConceptFolderError, match=BAD[case]) as err:
        read_concepts(folder)
    assert str(folder / "concepts.json") in str(err.value)  # says which file


def test_an_embedding_file_of_the_wrong_shape_is_refused_before_the_tokenizer_changes(tmp_path):
    from safetensors.torch import save_file

    folder = shutil.copytree(COMMITTED, tmp_path / "concepts")
    save_file({"<class_3>": torch.zeros(2, 7)}, folder / "embeddings/class_3.safetensors")
    parts = load_sd_components(
        DEFAULT_PRIOR
    )  # the prior the folder was learned on (another is refused first)
    vocabulary = len(parts.tokenizer)
    with pytest.raises(
        ConceptFolderError,
        match=r"class_3.safetensors: '<class_3>' has 2 row.*Expected '<class_3>' of shape \(4, \d+\)",
    ):
        apply_concepts(parts, folder)
    assert len(parts.tokenizer) == vocabulary
