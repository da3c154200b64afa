"""Feature extractors: real ImageNet weights map correctly, inputs are resized and normalised as each
backbone expects, gradients reach the image, and every kind loads from a local source."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffexpand.features import build_extractor


def _grace_hopper(size: int = 224) -> torch.Tensor:
    """matplotlib's sample photo (a portrait in US Navy uniform) in [-1, 1]."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.fixture(scope="module")
def lite0():
    return build_extractor("timm")


def test_efficientnet_lite0_package_weights_recognise_a_photo(lite0):
    """The package's tensors, mapped by position onto timm's tf_efficientnet_lite0, classify
    ImageNet: the portrait's top-1 class is 652 "military uniform"."""
    import timm

    from diffexpand.features.timm_backbone import lite0_package_state_dict

    classifier = timm.create_model("tf_efficientnet_lite0")
    classifier.load_state_dict(lite0_package_state_dict(classifier))
    with torch.no_grad():
        logits = classifier.eval()(lite0.preprocess(_grace_hopper(160)))  # resized to 224 by preprocess
    assert int(logits.argmax()) == 652
    assert lite0.input_size == 224 and lite0.mean.flatten().tolist() == [0.5, 0.5, 0.5]


def test_features_are_differentiable_and_preprocessing_matches_the_backbone(lite0):
    image = torch.zeros(2, 3, 32, 32, requires_grad=True)  # mid grey in [-1, 1]
    x = lite0.preprocess(image)
    assert x.shape == (2, 3, 224, 224) and torch.allclose(x, torch.zeros_like(x), atol=1e-6)  # (0.5-0.5)/0.5
    features = lite0(image)
    assert features.shape == (2, 1280)
    features.pow(2).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_oracle_extractor():
    oracle = build_extractor("oracle")
    assert oracle(torch.rand(3, 3, 64, 64) * 2 - 1).shape == (3, 128)


def test_transformers_clip_from_a_local_folder(tmp_path):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPVisionConfig(**sizes, image_size=32, patch_size=8, projection_dim=16)
    CLIPVisionModelWithProjection(config).save_pretrained(tmp_path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path
    )
    clip = build_extractor({"kind": "clip", "path": str(tmp_path)})
    assert clip.input_size == 32 and clip.mean.flatten()[0] == pytest.approx(0.48145466)
    assert clip(torch.zeros(2, 3, 64, 64)).shape == (2, 16)


def test_open_clip_from_a_local_checkpoint(tmp_path):
    import open_clip

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
           "head_width": 16}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32,
           "heads": 2, "layers": 1}}  # fmt: skip
    (tmp_path / "tiny-test-vit.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path)
    torch.save(open_clip.create_model("tiny-test-vit").state_dict(), tmp_path / "weights.pt")
    extractor = build_extractor({"kind": "open_clip", "model_name": "tiny-test-vit",
                                 "pretrained": str(tmp_path / "weights.pt")})  # fmt: skip
    assert extractor.input_size == 32 and extractor(torch.zeros(2, 3, 32, 32)).shape == (2, 16)


def test_unknown_or_unavailable_extractors_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown feature extractor kind 'resnet'"):
        build_extractor("resnet")
    with pytest.raises(Exception, match="openai/clip-vit-large-patch14"):
        build_extractor({"kind": "clip", "path": "openai/clip-vit-large-patch14"})  # offline: no hub
    with pytest.raises(FileNotFoundError):
        build_extractor({"kind": "timm", "model_name": "resnet18", "checkpoint": str(tmp_path / "none.pt")})


def test_timm_loads_a_local_safetensors_checkpoint(tmp_path):
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("resnet18", num_classes=3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "r18.safetensors")
    extractor = build_extractor({"kind": "timm", "model_name": "resnet18",
                                 "checkpoint": str(tmp_path / "r18.safetensors")})  # fmt: skip
    x = extractor.preprocess(torch.zeros(1, 3, 32, 32))
    expected = model.eval().forward_head(model.forward_features(x), pre_logits=True)
    assert torch.allclose(extractor(torch.zeros(1, 3, 32, 32)), expected, atol=1e-5)
