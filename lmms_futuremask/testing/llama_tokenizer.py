"""Tiny LLaMA-style SentencePiece-BPE tokenizers, trained offline, in both ``tokenizer.json`` layouts.

LLaVA-1.5 ran the slow LLaMA tokenizer (SentencePiece itself). llava-hf checkpoints carry a ``tokenizer.json`` in one
of two layouts: the older one (a ``Prepend("▁")`` + ``Replace(" ", "▁")`` normalizer, what conversions wrote before
transformers 4.38) and the newer one (a ``Metaspace`` pre-tokenizer with ``prepend_scheme="first"``, what later
conversions and transformers 5's ``LlamaTokenizer`` build). Both wrap the same BPE vocabulary and merges; they differ
where text follows a special token and where a chunk starts with a space. These builders give tests the
SentencePiece model (the reference) and one fast tokenizer per layout, each with an ``<image>`` token.
"""

from __future__ import annotations

from pathlib import Path

from ..validation import unknown_choice
from .vlms._common import CORPUS

LAYOUTS = ("prepend", "metaspace")
_MORE_TEXT = """
Difference: Question: Context: Global Table: Choice list: Your answer is: what is the password hidden in the images?
Given the images, describe what happened. The man opened the door and walked to the table.
Which image matches the first one? Answer with the letter of the correct option. 0 1 2 3 4 5 6 7 8 9 10 42 1998
"""


def train_sentencepiece(directory: str | Path, vocab_size: int = 420) -> Path:
    """Train a LLaMA-like SentencePiece BPE model (byte fallback, dummy prefix, digits split, identity
    normalization, <unk>/<s>/</s> = 0/1/2) on a built-in corpus; returns the ``.model`` file."""
    import sentencepiece as spm

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prefix = directory / "llama_sp"
    lines = [line for line in (CORPUS + _MORE_TEXT).splitlines() if line.strip()] * 8
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def llama_tokenizer(model_file: str | Path, layout: str):
    """A fast ``LlamaTokenizer`` over the SentencePiece model, in ``layout`` (``prepend`` or ``metaspace``),
    adding BOS, with ``<image>`` as an extra special token."""
    import sentencepiece as spm
    from tokenizers import normalizers
    from transformers import LlamaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    if layout not in LAYOUTS:
        raise unknown_choice("layout", layout, LAYOUTS, noun="layouts")
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    # The vocabulary in id order and the merges ordered by piece score, as transformers' LLaMA converter does.
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(sp.get_piece_size())}
    tokenizer = LlamaTokenizer(vocab=vocab, merges=generate_merges(vocab, scores))  # the Metaspace layout
    if layout == "prepend":
        backend = tokenizer.backend_tokenizer
        backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        backend.pre_tokenizer = None
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.pad_token = tokenizer.unk_token
    tokenizer.add_bos_token = True  # BOS first, as LLaMA's tokenizer adds it
    tokenizer.update_post_processor()
    return tokenizer
