"""Diff-II suffixes: list, file, preset, and generated (captioner + language model) sources."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from diffexpand.data.readers import available_datasets
from diffexpand.methods import create_method
from diffexpand.suffixes import SUFFIX_PRESETS, resolve_suffixes
from diffexpand.suffixes.generate import (
    SuffixGenerationError,
    caption_images,
    parse_phrases,
    summarise_captions,
)

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "photo", "of", "shoe", "on", "grass"]


@pytest.fixture(scope="module")
def tiny_captioner(tmp_path_factory):
    """A randomly initialised BLIP captioner whose decoder is biased to say "shoe"."""
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,  # fmt: skip
        BlipProcessor,
    )

    folder = tmp_path_factory.mktemp("blip")
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)}, bos_token="[DEC]")
    text = dict(
        vocab_size=len(WORDS),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        encoder_hidden_size=32,
        bos_token_id=5,
        pad_token_id=0,
        sep_token_id=3,
    )
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  image_size=32, patch_size=8)  # fmt: skip
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(
        BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    )
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[WORDS.index("shoe")] = 50.0
    model.save_pretrained(folder / "model")
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(
        folder / "model"
    )
    return str(folder / "model")


class _ChatServer(BaseHTTPRequestHandler):
    requests: list = []
    answer = '1. on the grass\n2. Seen from the side.\n- on the grass\n* "in the snow"\n'

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": self.answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_endpoint(monkeypatch):
    """An OpenAI-compatible chat endpoint on loopback; URL and key reach the client only via env."""
    _ChatServer.requests = []
    server = HTTPServer(("127.0.0.1", 0), _ChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DIFFEXPAND_LLM_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
    monkeypatch.setenv("DIFFEXPAND_LLM_API_KEY", "sk-test-not-a-secret")
    yield _ChatServer.requests
    server.shutdown()


def test_every_dataset_has_a_preset_of_at_most_ten_short_suffixes():
    for name in available_datasets():
        if name == "imagefolder":
            continue
        suffixes = SUFFIX_PRESETS[name]
        assert 1 <= len(suffixes) <= 10 and len(set(suffixes)) == len(suffixes)
        assert all(1 <= len(s.split()) <= 6 for s in suffixes)


def test_suffix_sources(tmp_path):
    path = tmp_path / "suffixes.txt"
    path.write_text("# mine\non the grass\n\n  at night \n")
    assert resolve_suffixes(suffix_file=str(path)) == ["on the grass", "at night"]
    assert resolve_suffixes(suffixes=["a", "b"]) == ["a", "b"]
    assert resolve_suffixes(suffix_preset="cub") == SUFFIX_PRESETS["cub"]
    assert resolve_suffixes() == []
    with pytest.raises(ValueError, match="one suffix source"):
        resolve_suffixes(suffixes=["a"], suffix_preset="cub")
    with pytest.raises(ValueError, match="available: aircraft"):
        resolve_suffixes(suffix_preset="nope")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no suffix"):
        resolve_suffixes(suffix_file=str(tmp_path / "empty.txt"))
    with pytest.raises(ValueError, match="both suffix_captioner and suffix_llm"):
        create_method("diffii", suffix_captioner="some/model")


def test_parse_phrases_strips_bullets_numbers_quotes_and_duplicates():
    answer = '1. on the grass\n2) Seen from the side.\n- On the grass\n* "in the snow"\n\nextra\n'
    assert parse_phrases(answer, 3) == ["on the grass", "Seen from the side", "in the snow"]


def test_captioner_captions_every_image(tiny_captioner):
    from PIL import Image

    images = [Image.new("RGB", (28, 28), (30 * i, 0, 0)) for i in range(5)]
    captions = caption_images(images, tiny_captioner, batch_size=2, max_new_tokens=3)
    assert len(captions) == 5 and all(c.split()[0] == "shoe" for c in captions)


def test_openai_compatible_summary_takes_url_and_key_from_env(chat_endpoint):
    phrases = summarise_captions(
        ["a shoe on grass", "a shoe on grass", "a boot"], "openai:tiny-llm", "shoe", 5
    )
    assert phrases == ["on the grass", "Seen from the side", "in the snow"]
    (request,) = chat_endpoint
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test-not-a-secret"
    prompt = request["body"]["messages"][0]["content"]
    assert (
        request["body"]["model"] == "tiny-llm" and prompt.count("a shoe on grass") == 1 and "a boot" in prompt
    )


def test_unreachable_endpoint_fails_clearly_without_echoing_the_key(monkeypatch):
    monkeypatch.setenv("DIFFEXPAND_LLM_BASE_URL", "http://127.0.0.1:9/v1")  # discard port: refused
    monkeypatch.setenv("DIFFEXPAND_LLM_API_KEY", "sk-very-secret")
    with pytest.raises(SuffixGenerationError, match="DIFFEXPAND_LLM_BASE_URL") as err:
        summarise_captions(["x"], "openai:m", "shoe")
    assert "sk-very-secret" not in str(err.value)


def test_diffii_generates_suffixes_from_the_real_images(tiny_sd_dir, tiny_concepts, tiny_captioner,
                                                        chat_endpoint, tmp_path):  # fmt: skip
    import expand

    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [
        "predict", f"--output_dir={out}", "--trainer.accelerator=cpu",
        f"--model.init_args.pretrained={tiny_sd_dir}",
        f"--model.init_args.concepts={tiny_concepts}", "--model.init_args.method.num_inference_steps=2",
        "--model.init_args.method.inversion_steps=2", "--model.init_args.method.suffix_preset=null",
        f"--model.init_args.method.suffix_captioner={tiny_captioner}",
        "--model.init_args.method.suffix_llm=openai:tiny-llm", "--data.init_args.real.shots=1",
        "--data.init_args.images_per_class=2", f"--data.init_args.cache_dir={cache}",
    ]  # fmt: skip
    expand.cli_main(args)
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert {r["suffix"] for r in records} <= {"on the grass", "Seen from the side", "in the snow"}
    assert len(chat_endpoint) == 1 and "shoe" in chat_endpoint[0]["body"]["messages"][0]["content"]
    assert len(list(cache.glob("suffixes-*.json"))) == 1
    expand.cli_main([*args[:1], f"--output_dir={tmp_path / 'again'}", *args[2:]])  # cached: no new request
    assert len(chat_endpoint) == 1


def test_attribute_suffixes_are_captions_the_v2_prior_was_trained_on():
    """Each suffix, appended the way Diff-II appends it, is a caption the attribute captioner writes for
    some image: the words are in the prior's vocabulary, in the order and form its captions use."""
    from itertools import product

    from diffexpand.concepts.metadata import with_suffix
    from diffexpand.data.attributes import ATTRIBUTE_WORDS, attribute_caption
    from diffexpand.suffixes.presets import attribute_suffixes

    captions = set()
    for words in product(*[(None, *pair) for pair in ATTRIBUTE_WORDS.values()]):
        captions.add(attribute_caption("a photo of a {}", "top", [w for w in words if w is not None]))
    suffixes = attribute_suffixes()
    assert len(suffixes) == len(set(suffixes)) == 6 + 12
    assert all(with_suffix("a photo of a top", s) in captions for s in suffixes)
    assert SUFFIX_PRESETS["fashion_mnist_attributes"] == suffixes
