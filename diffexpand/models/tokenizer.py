"""The real CLIP BPE tokenizer, built offline from the vocabulary that ships inside open_clip.

Stable Diffusion 1.x uses OpenAI CLIP's tokenizer (49,408 tokens, 77 positions, padded with
<|endoftext|>). The same byte-pair merges ship in the `open_clip_torch` wheel, so we rebuild the
vocabulary in exactly CLIP's order and hand it to a stock `transformers.CLIPTokenizer`: anything that
loads SD's tokenizer (diffusers included) loads ours.
"""

from __future__ import annotations

import gzip
import html
import importlib.resources

import ftfy
from transformers import CLIPTokenizer

CLIP_VOCAB_SIZE = 49408
CLIP_CONTEXT_LENGTH = 77
# CLIP keeps the first 48,894 merges of the file (49152 - 256 byte tokens - 2 special tokens).
_NUM_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode map; the first 256 vocabulary entries."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def _open_clip_bpe_merges() -> list[str]:
    path = importlib.resources.files("open_clip").joinpath("bpe_simple_vocab_16e6.txt.gz")
    with path.open("rb") as fh:
        lines = gzip.decompress(fh.read()).decode("utf-8").split("\n")
    return lines[1 : _NUM_MERGES + 1]  # line 0 is a version header


def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary (token -> id) and merge list, in OpenAI's order."""
    merges = _open_clip_bpe_merges()
    byte_tokens = list(_bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"CLIP vocabulary has {len(vocab)} entries, expected {CLIP_VOCAB_SIZE}")
    return vocab, merges


def build_clip_tokenizer() -> CLIPTokenizer:
    """A `CLIPTokenizer` configured like Stable Diffusion 1.x's (pad with <|endoftext|>, 77 tokens)."""
    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(m.split()) for m in merges],
        model_max_length=CLIP_CONTEXT_LENGTH,
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def clean_prompt(text: str) -> str:
    """CLIP's own text clean-up (ftfy repair, HTML unescape, whitespace folding).

    transformers' fast CLIP tokenizer only lower-cases and NFC-normalises, so without this step
    curly quotes, ligatures, full-width characters or "&amp;" tokenise differently from CLIP.
    """
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split())
