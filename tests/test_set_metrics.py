"""Synthetic-set metrics on tiny injected models: CLIP score, LPIPS diversity, FID/KID; clear errors
where pretrained weights are missing (offline)."""

import json

import pytest
import torch

from diffexpand.evaluation.set_metrics import (
    MetricWeightsNotAvailable,
    build_lpips,
    clip_score_per_class,
    fid_kid,
    lpips_diversity,
)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from diffexpand.models.tokenizer import build_clip_tokenizer

    folder = tmp_path_factory.mktemp("clip")
    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    vision = dict(sizes, image_size=32, patch_size=8)
    config = CLIPConfig(text_config=dict(sizes, vocab_size=49408), vision_config=vision, projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(images, build_clip_tokenizer())
    processor.save_pretrained(folder)
    return str(folder)


def test_clip_score_equals_the_cosine_of_the_models_embeddings(tiny_clip):
    from transformers import CLIPModel, CLIPProcessor

    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 32, 32, generator=g) * 2 - 1
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    prompts = ["a photo of a shoe", "a photo of a bag"]
    scores = clip_score_per_class(images, labels, prompts, tiny_clip)
    model, processor = CLIPModel.from_pretrained(tiny_clip), CLIPProcessor.from_pretrained(tiny_clip)
    uint8 = ((images + 1) * 127.5).round().to(torch.uint8)
    with torch.no_grad():
        inputs = processor(text=[prompts[int(c)] for c in labels], images=list(uint8), return_tensors="pt",
                           padding=True)  # fmt: skip
        out = model(**inputs)
    cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)
    expected = (100 * cos).clamp_min(0)
    for c in (0, 1):
        assert scores[c] == pytest.approx(float(expected[labels == c].mean()), abs=1e-3)


def test_lpips_is_zero_for_identical_images_and_grows_with_difference():
    lp = build_lpips("squeeze", random_backbone=True)
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    same = base.repeat(4, 1, 1, 1)
    near = (base + 0.05 * torch.randn(4, 3, 32, 32, generator=g)).clamp(-1, 1)
    far = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    labels = torch.zeros(4, dtype=torch.long)
    d_same = lpips_diversity(same, labels, lp)[0]
    d_near, d_far = lpips_diversity(near, labels, lp)[0], lpips_diversity(far, labels, lp)[0]
    assert d_same == pytest.approx(0.0, abs=1e-6) and 0 < d_near < d_far


def test_fid_kid_with_an_injected_feature_extractor():
    class Features(torch.nn.Module):  # uint8 images -> 8 simple colour statistics
        num_features = 8

        def forward(self, x):
            x = x.float() / 255
            return torch.cat(
                [x.mean((2, 3)), x.std((2, 3)), x.amax((1, 2, 3))[:, None], x.amin((1, 2, 3))[:, None]], 1
            )

    g = torch.Generator().manual_seed(0)
    real = torch.rand(40, 3, 16, 16, generator=g) * 2 - 1
    similar = torch.rand(40, 3, 16, 16, generator=g) * 2 - 1
    shifted = (similar * 0.5 + 0.4).clamp(-1, 1)
    close, far = (
        fid_kid(real, similar, Features(), kid_subset=20),
        fid_kid(real, shifted, Features(), kid_subset=20),
    )
    assert close["fid"] < far["fid"] and close["kid"] < far["kid"]


def test_missing_weights_fail_with_a_clear_message():
    with pytest.raises(MetricWeightsNotAvailable, match="local folder"):
        clip_score_per_class(
            torch.zeros(1, 3, 8, 8), torch.zeros(1, dtype=torch.long), ["x"], "openai/clip-vit-base-patch32"
        )
    with pytest.raises(MetricWeightsNotAvailable, match="hub/checkpoints"):
        build_lpips("alex")
    with pytest.raises(MetricWeightsNotAvailable, match="pt_inception"):
        fid_kid(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))


def test_expand_run_measures_the_set_and_logs_it_to_wandb(tiny_sd_dir, tmp_path):
    """The shipped expansion trainer (configs/expand/base/trainer.yaml): set_metrics.json, and an
    offline W&B run whose summary holds the oracle figures and the CLIP score of the committed tiny
    CLIP, with a per-class table and a labelled grid, and the settings once, typed."""
    import json

    from wandb_runs import offline_runs, table

    import expand
    from tools.evaluate_synthetic import main as evaluate

    out = tmp_path / "set"
    expand.cli_main([
        "predict", "--config", "configs/expand/txt2img.yaml", f"--output_dir={out}",
        "--trainer.accelerator=cpu", f"--model.init_args.pretrained={tiny_sd_dir}",
        "--model.init_args.method.num_inference_steps=2", "--data.init_args.images_per_class=3",
        f"--data.init_args.cache_dir={tmp_path / 'cache'}", f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.callbacks.real_reference=100",
    ])  # fmt: skip
    written = json.loads((out / "set_metrics.json").read_text())
    assert written["images"] == 30 and 0 <= written["oracle"]["faithfulness"] <= 1
    assert written["oracle"]["diversity"] > 0 and written["oracle"]["frechet_distance"] > 0
    assert len(written["clip_score"]["per_class"]) == 10
    result = evaluate([str(out), "--real-reference", "100"])[str(out)]
    assert result["oracle"]["faithfulness"] == written["oracle"]["faithfulness"]
    assert result["oracle"]["frechet_distance"] == pytest.approx(written["oracle"]["frechet_distance"])

    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (run,) = offline_runs(tmp_path / "wandb").values()
    summary, config = run["summary"], run["config"]
    assert summary["set/faithfulness"] == pytest.approx(written["oracle"]["faithfulness"])
    assert summary["set/clip_score"] == pytest.approx(written["clip_score"]["mean"])
    assert summary["set/frechet_distance"] == pytest.approx(written["oracle"]["frechet_distance"])
    assert summary["set/grid"]["count"] == 1
    rows = table(run_dir, summary, "set/per_class")
    assert [row[0] for row in rows["data"]][:2] == ["T-shirt/top", "Trouser"] and "clip_score" in rows[
        "columns"
    ]
    # the settings once, with their types: no second copy under the module's own argument names
    assert config["model.init_args.method.init_args.num_inference_steps"] == 2
    assert "num_inference_steps" not in config and "pretrained" not in config


def test_metric_weights_are_checked_before_generation(tmp_path):
    from types import SimpleNamespace

    from callbacks.set_metrics import SyntheticSetMetrics

    callback = SyntheticSetMetrics(clip_model=str(tmp_path / "no-clip"), lpips_net="alex")
    with pytest.warns(UserWarning) as caught:
        callback.setup(SimpleNamespace(is_global_zero=True), None, "predict")
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("CLIP score left out") and "no-clip" in m for m in messages)
    assert any(m.startswith("LPIPS diversity left out") for m in messages)
    assert callback._clip is None and callback._lpips is None


def test_a_set_of_one_image_per_class_has_no_diversity_and_stays_valid_json():
    """Diversity is undefined for one image per class: None (no NaN in set_metrics.json, no warning)."""
    import warnings

    from callbacks.set_metrics import summary_figures
    from diffexpand.evaluation.synthetic_quality import synthetic_quality
    from diffexpand.oracle_cnn import OracleCNN
    from diffexpand.paths import DEFAULT_ORACLE

    images = torch.rand(3, 3, 32, 32) * 2 - 1  # as load_synthetic gives them
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Mean of empty slice" was one
        result = synthetic_quality(OracleCNN.load(DEFAULT_ORACLE), images, torch.tensor([0, 1, 2]))
    assert result["diversity"] is None and all(v["diversity"] is None for v in result["per_class"].values())
    json.loads(json.dumps(result), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert "set/diversity" not in summary_figures({"oracle": result})


def test_frechet_reference_defaults_to_the_validation_split_never_the_test_split():
    """Set metrics choose settings (the solver table, sweeps): their real reference is the validation
    split carved from the training split, disjoint from every reserved few-shot subset; a prefix of a
    larger reference; the test split only when asked."""
    import numpy as np

    from diffexpand.data.fashion_mnist import load_fashion_mnist, resize_uint8
    from diffexpand.data.subsets import reserved_few_shot_indices, validation_indices
    from diffexpand.evaluation.synthetic_quality import (
        fashion_mnist_reference_images,
        fashion_mnist_test_images,
    )

    train, labels = load_fashion_mnist("train")
    reference = fashion_mnist_reference_images(40)
    chosen = validation_indices(labels)[:40]
    assert not np.intersect1d(chosen, reserved_few_shot_indices(labels)).size
    expected = resize_uint8(train[chosen], 32).float().div(127.5).sub(1)
    assert reference.shape == (40, 3, 32, 32) and torch.equal(reference[:, :1], expected)
    assert torch.equal(fashion_mnist_reference_images(100)[:40], reference)  # a prefix of a larger one
    assert torch.equal(fashion_mnist_reference_images(30, "test"), fashion_mnist_test_images(30))
    assert not torch.equal(fashion_mnist_reference_images(30, "test"), reference[:30])
    with pytest.raises(ValueError, match="holds 1000 images; asked for 1001"):
        fashion_mnist_reference_images(1001)
    with pytest.raises(ValueError, match="reference split must be one of"):
        fashion_mnist_reference_images(10, "train")


def test_set_metrics_callback_refuses_an_unknown_reference_split():
    from callbacks.set_metrics import SyntheticSetMetrics

    with pytest.raises(ValueError, match="reference_split must be one of"):
        SyntheticSetMetrics(oracle="assets/fashion-oracle", real_reference=10, reference_split="tset")
