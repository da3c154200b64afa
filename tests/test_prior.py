"""The committed embedded default: the tiny Fashion-MNIST prior and its oracle."""

import pytest
import torch

from diffexpand.data.fashion_mnist import METACLASS_OF_CLASS, METACLASSES, load_fashion_mnist, resize_uint8
from diffexpand.evaluation.prior_quality import generate_for_prompt, metaclass_accuracy
from diffexpand.methods import Batch, Record
from diffexpand.methods.txt2img import Txt2Img
from diffexpand.models import load_sd_components
from diffexpand.models.text import encode_prompts
from diffexpand.models.vae import encode_images
from diffexpand.oracle_cnn import OracleCNN
from diffexpand.paths import DEFAULT_ORACLE, DEFAULT_PRIOR
from diffexpand.sampling import Schedule, cfg_model_fn, ddim_invert, ddim_sample


@pytest.fixture(scope="module")
def prior():
    return load_sd_components(DEFAULT_PRIOR)


@pytest.fixture(scope="module")
def oracle():
    return OracleCNN.load(DEFAULT_ORACLE)


@pytest.fixture(scope="module")
def test_images():
    images, labels = load_fashion_mnist("test")
    x = resize_uint8(images[:1000], 32).float().div(127.5).sub(1).expand(-1, 3, -1, -1)
    return x, torch.as_tensor(labels[:1000])


def test_prior_is_small_fp16_safetensors():
    files = list(DEFAULT_PRIOR.rglob("*.safetensors"))
    assert len(files) == 3  # unet, vae, text_encoder
    assert sum(f.stat().st_size for f in files) < 30e6
    assert not list(DEFAULT_PRIOR.rglob("*.bin")) and not list(DEFAULT_PRIOR.rglob("*.pt"))


def test_committed_prior_loads_offline_and_generates_a_batch(prior):
    prompts = [f"a photo of a {m}" for m in METACLASSES]
    records = [
        Record(f"r{i}", i, m, i, "txt2img", {"prompt": p})
        for i, (m, p) in enumerate(zip(METACLASSES, prompts, strict=True))
    ]
    images = Txt2Img(num_inference_steps=10).generate(prior, Batch.of(records)).images
    assert images.shape == (5, 3, 32, 32)
    assert torch.isfinite(images).all()
    assert images.std() > 0.2  # real content, not a flat image
    again = Txt2Img(num_inference_steps=10).generate(prior, Batch.of(records[:2])).images
    torch.testing.assert_close(again, images[:2], atol=1e-4, rtol=0)  # seeds, not batch, decide


def test_stock_pipeline_loads_the_committed_prior():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(DEFAULT_PRIOR)  # no dtype: the stock defaults
    out = pipe("a photo of a bag", num_inference_steps=5, height=32, width=32, output_type="np")
    assert out.images.shape == (1, 32, 32, 3)


def test_oracle_classifies_the_test_split(oracle, test_images):
    x, y = test_images
    with torch.no_grad():
        accuracy = (oracle(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.88


def test_prior_follows_metaclass_prompts(prior, oracle):
    """A quick version of the model-card figure (16 samples instead of 200 per metaclass)."""
    accuracy, _ = metaclass_accuracy(prior, oracle, n_per_metaclass=16, steps=25, guidance=7.5, seed=123)
    assert sum(accuracy.values()) / len(accuracy) > 0.8


def test_prior_does_not_know_fine_classes(prior, oracle):
    """Like SD with "bird" vs "Painted Bunting": shoe prompts give a mix of the three shoe classes."""
    shoes = generate_for_prompt(prior, "a photo of a shoe", 48, 25, 7.5, 7)  # the shoe prompt only
    with torch.no_grad():
        fine = oracle(shoes).argmax(1)
    shoe_classes = {i for i, m in enumerate(METACLASS_OF_CLASS) if m == "shoe"}
    assert len(set(fine.tolist()) & shoe_classes) >= 2


def test_inversion_round_trip_on_the_trained_prior(prior, test_images):
    """DDIM inversion at CFG 1.0, then sampling with the same prompt, returns the starting latent, and
    closer with more steps (DDIM inversion's error is first order in the step size)."""
    x, y = test_images
    latents = encode_images(prior.vae, x[:8]).detach()
    prompts = [f"a photo of a {METACLASS_OF_CLASS[int(c)]}" for c in y[:8]]
    cond = encode_prompts(prior.tokenizer, prior.text_encoder, prompts)
    fn = cfg_model_fn(prior.unet, cond, None, 1.0)
    errors = {}
    for steps in (50, 100):
        schedule = Schedule.from_scheduler(prior.scheduler, steps)
        with torch.no_grad():
            back = ddim_sample(fn, ddim_invert(fn, latents, schedule), schedule)
        errors[steps] = (back - latents).pow(2).mean().sqrt() / latents.pow(2).mean().sqrt()
    assert errors[100] < TOLERANCE_RELATIVE_RMS
    assert errors[100] < 0.7 * errors[50]


TOLERANCE_RELATIVE_RMS = 0.05  # at 100 steps on 8 test images (the figures: docs/measurements)
