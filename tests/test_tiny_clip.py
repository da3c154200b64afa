"""The tiny Fashion-MNIST CLIP: the recipe writes a folder transformers loads as it is; the committed
asset knows the fine class names (zero-shot accuracy, CLIP score of right vs wrong prompts)."""

from pathlib import Path

import pytest
import torch

from diffexpand.data.fashion_mnist import CLASS_NAMES
from diffexpand.evaluation.tiny_clip import (
    EVAL_TEMPLATE,
    build_processor,
    clip_score_matrix,
    multi_positive_clip_loss,
    pixel_values,
    zero_shot,
)

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "assets" / "tiny-fashion-clip"
PROMPTS = [EVAL_TEMPLATE.format(name) for name in CLASS_NAMES]


@pytest.fixture(scope="module")
def test_sample():
    """The first 200 test images as the pipeline sees them (32 px RGB in [-1, 1]) and their labels."""
    from tools.evaluate_clip import load_test_images

    return load_test_images(200)


def test_training_normalisation_equals_the_processor():
    """Training normalises batched tensors itself; it must be what the saved processor does to the
    same images as uint8 (so CLIPScore sees what the model was trained on)."""
    processor = build_processor()
    g = torch.Generator().manual_seed(0)
    uint8 = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)
    expected = processor(images=list(uint8), return_tensors="pt")["pixel_values"]
    assert torch.allclose(pixel_values(uint8.float() / 127.5 - 1, processor), expected, atol=1e-5)


def test_same_class_captions_are_positives_in_the_loss():
    labels = torch.tensor([0, 0, 1, 1])
    by_class = torch.eye(2)[labels]  # images and captions of a class share one direction
    aligned = multi_positive_clip_loss(by_class, by_class, labels, torch.tensor(100.0))
    # two equally good positives per row: the best possible loss is log 2, not the log 1 of plain CLIP
    assert aligned.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-4)
    swapped = multi_positive_clip_loss(by_class, by_class.flip(0), labels, torch.tensor(100.0))
    assert swapped > aligned + 10


def test_recipe_writes_a_folder_transformers_loads(tmp_path):
    """configs/clip.yaml at toy size for three steps: the folder loads with no extra argument, in
    float32 although stored in float16, and gives the trained module's embeddings."""
    from transformers import CLIPModel, CLIPProcessor

    import train

    out = tmp_path / "clip"
    cli = train.cli_main([
        "fit", "--config", str(REPO / "configs/clip.yaml"),
        "--trainer.max_steps=3", "--trainer.limit_val_batches=1", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=false", "--trainer.callbacks=null", "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--model.init_args.size.vision_hidden=32", "--model.init_args.size.vision_layers=1",
        "--model.init_args.size.vision_heads=2", "--model.init_args.size.patch_size=8",
        "--model.init_args.size.text_hidden=16", "--model.init_args.size.text_layers=1",
        "--model.init_args.size.projection_dim=16", f"--model.init_args.output_dir={out}",
        "--data.init_args.batch_size=8",
    ])  # fmt: skip
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    model, processor = CLIPModel.from_pretrained(out).eval(), CLIPProcessor.from_pretrained(out)
    assert model.dtype == torch.float32 and model.config.vision_config.hidden_size == 32
    assert processor.tokenizer.model_max_length == model.config.text_config.max_position_embeddings == 32

    trained = cli.model.model.eval()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        mine = trained.get_image_features(pixel_values=pixel_values(images, processor)).pooler_output
        uint8 = list(((images + 1) * 127.5).round().byte())
        enc = processor(text=PROMPTS[:3], images=uint8, return_tensors="pt", padding=True)
        theirs = model(**enc)
        text = trained.get_text_features(input_ids=enc["input_ids"]).pooler_output
    # float16 storage: equal to about 3 significant digits
    assert torch.allclose(torch.nn.functional.normalize(mine, dim=-1), theirs.image_embeds, atol=5e-3)
    assert torch.allclose(torch.nn.functional.normalize(text, dim=-1), theirs.text_embeds, atol=5e-3)


def test_committed_clip_is_a_small_float32_transformers_folder():
    from transformers import CLIPModel, CLIPProcessor

    size = sum(f.stat().st_size for f in ASSET.iterdir() if f.is_file())
    assert size < 10 * 2**20, f"{size / 2**20:.1f} MiB"
    model, processor = CLIPModel.from_pretrained(ASSET), CLIPProcessor.from_pretrained(ASSET)
    assert model.dtype == torch.float32
    assert processor.image_processor.crop_size == {"height": 32, "width": 32}


def test_committed_clip_knows_the_fine_class_names(test_sample):
    """Zero-shot accuracy on 200 test images, "a photo of a {fine name}" (chance: 0.1; measured 0.84
    here, 0.849 on all 10,000 in the model card)."""
    from transformers import CLIPModel, CLIPProcessor

    images, labels = test_sample
    model, processor = CLIPModel.from_pretrained(ASSET).eval(), CLIPProcessor.from_pretrained(ASSET)
    result = zero_shot(model, processor, images, labels, list(CLASS_NAMES))
    assert result["accuracy"] > 0.75


def test_committed_clip_scores_the_right_prompt_above_a_wrong_one(test_sample):
    """Through the project's torchmetrics path with a local folder: each class's images score higher
    against their own prompt than against the next class's (measured on these 200: 64.5 vs 7.7 on
    average); the model card's batched matrix gives the same right-prompt figures."""
    from transformers import CLIPModel, CLIPProcessor

    from diffexpand.evaluation.set_metrics import clip_score_per_class

    images, labels = test_sample
    right = clip_score_per_class(images, labels, PROMPTS, model=str(ASSET))
    wrong = clip_score_per_class(images, labels, PROMPTS[1:] + PROMPTS[:1], model=str(ASSET))
    assert all(right[c] > wrong[c] for c in right), (right, wrong)
    assert sum(right.values()) / 10 > sum(wrong.values()) / 10 + 30

    model, processor = CLIPModel.from_pretrained(ASSET).eval(), CLIPProcessor.from_pretrained(ASSET)
    matrix = clip_score_matrix(model, processor, images, labels, PROMPTS)
    assert matrix.diag().tolist() == pytest.approx([right[c] for c in range(10)], abs=1e-2)


def test_evaluate_clip_refuses_a_path_that_is_not_a_folder(tmp_path):
    """A mistyped folder is not sent to the hub as a model id."""
    from tools.evaluate_clip import evaluate

    with pytest.raises(FileNotFoundError, match="no-clip is not a folder: give the CLIP folder"):
        evaluate(tmp_path / "no-clip", n=1)
