"""The tokenizer built from open_clip's vocabulary must give exactly CLIP's ids."""

import random

import open_clip
import pytest

from diffexpand.models.text import tokenize_prompts
from diffexpand.models.tokenizer import CLIP_VOCAB_SIZE, build_clip_tokenizer

FIXED = [
    "a photo of a bird",
    "a photo of a <class_3> bird",
    "A Photo Of A Painted Bunting!!!",
    "red-winged blackbird, perched; on a branch... (close-up)",
    "Boeing 737-800 at 12:45pm, 3.5 miles away",
    "100% cotton t-shirt/top — size XL",
    "café naïve résumé façade jalapeño",
    "日本語のテキストと漢字",
    "Ünïcödé ßtraße Ελληνικά русский текст",
    "emoji 🐦🦜✈️🚗 and symbols ©®™",
    "“curly quotes” and ‘single’ ones",
    "ﬁne ligatures ﬂow",
    "ＦＵＬＬＷＩＤＴＨ letters",
    "html &amp; entities &lt;b&gt;",
    "tabs\tand\nnewlines   and    spaces",
    "it's what's they're we've I'm you'll he'd",
    "",
    "   ",
    "a" * 300,
    " ".join(["word"] * 120),
    "numbers 0123456789 and 3.14159 and 1e-5",
    "mixedCASE camelCaseWords snake_case_words kebab-case-words",
    "punctuation !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
]
_WORDS = (
    "photo bird aircraft car animal flower sneaker sandal coat shirt dress bag boot a of the with on in "
    "painted bunting boeing airbus tabby 747 A380 !? , . - ' é ü 中 🐦 &amp; x2 42 3.0"
).split()


def _random_strings(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 90))) for _ in range(n)]


STRINGS = FIXED + _random_strings(100)


@pytest.fixture(scope="module")
def tokenizers():
    return build_clip_tokenizer(), open_clip.get_tokenizer("ViT-L-14")


def test_vocabulary_is_clips(tokenizers):
    ours, _ = tokenizers
    assert len(ours) == CLIP_VOCAB_SIZE
    assert ours.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [49406, 49407]
    assert ours.model_max_length == 77
    assert ours.pad_token_id == 49407  # SD 1.x pads with <|endoftext|>


@pytest.mark.parametrize("text", STRINGS, ids=[f"s{i}" for i in range(len(STRINGS))])
def test_ids_equal_open_clip(tokenizers, text):
    ours, reference = tokenizers
    ids = tokenize_prompts(ours, [text])[0].tolist()
    ref = reference([text])[0].tolist()
    n = ref.index(49407) + 1  # up to and including <|endoftext|>; open_clip pads with 0, SD with eot
    assert ids[:n] == ref[:n]
    assert all(i == 49407 for i in ids[n:])
    assert len(ids) == 77


def test_long_prompts_truncate_to_77_with_eot(tokenizers):
    ours, _ = tokenizers
    ids = tokenize_prompts(ours, ["bird " * 200])[0].tolist()
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407 and 49407 not in ids[1:-1]


def test_saved_tokenizer_round_trips(tokenizers, tmp_path):
    from transformers import CLIPTokenizer

    ours, _ = tokenizers
    ours.save_pretrained(tmp_path)
    loaded = CLIPTokenizer.from_pretrained(tmp_path)
    assert tokenize_prompts(loaded, STRINGS[:20]).tolist() == tokenize_prompts(ours, STRINGS[:20]).tolist()


def test_literal_special_tokens_behave_like_stable_diffusion(tokenizers):
    """The one place CLIP's two reference tokenizers part ways: SD's (transformers) reads a literal
    "<|endoftext|>" in a prompt as the special token, open_clip as punctuation. We follow SD."""
    ours, reference = tokenizers
    ids = tokenize_prompts(ours, ["a <|endoftext|> b"])[0].tolist()
    assert ids[:5] == [49406, 320, 49407, 321, 49407]  # "b" is 321
    assert 49407 not in reference(["a <|endoftext|> b"])[0].tolist()[1:4]
