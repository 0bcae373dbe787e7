"""Shared pieces of the tiny VLM builders: an offline-trained tokenizer and a weight init that spreads logits."""

from __future__ import annotations

from collections.abc import Iterable

import torch

#: Words of the prompts tests, sample tasks and MileBench use, so tiny tokenizers split them sensibly.
CORPUS = """
USER: ASSISTANT: user assistant system A chat between a curious human and an artificial intelligence assistant.
You are a helpful language and vision assistant. You are able to understand the visual content that the user
provides, and assist the user with a variety of tasks using natural language. [INST] <<SYS>> <</SYS>> [/INST]
What colour is the image? Which image is brighter? Answer with one word. Answer with the option's letter.
Choice list: Your answer is: Question: Context: red green blue yellow black white first second third left right
A. B. C. D. E. F. yes no true false zero one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9
The quick brown fox jumps over the lazy dog. Describe the change between the two images. What happened next?
Given the following images, answer the question. image table frame video object person action scene state
"""


def train_bpe_tokenizer(
    special_tokens: Iterable[str],
    vocab_size: int = 700,
    corpus: str = CORPUS,
    bos: str | None = "<s>",
    add_bos: bool = True,
):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``corpus`` with ``special_tokens`` (ids 0..n-1, in order).

    With ``add_bos`` the post-processor prepends ``bos`` to every encoding (Llama style). Wrap the result in the
    family's tokenizer class (``tokenizer_object=...``) so its processor finds the attributes it expects.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = list(dict.fromkeys(special_tokens))
    backend = Tokenizer(models.BPE(unk_token=specials[0] if specials else None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus.split("\n") * 4, trainer=trainer)
    if add_bos and bos is not None:
        bos_id = backend.token_to_id(bos)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    return backend


def spread_init(model: torch.nn.Module, seed: int, std: float = 0.15, skip: tuple[str, ...] = ("vision",)) -> None:
    """Re-draw every matrix outside the vision tower with a larger std than the default 0.02, deterministically,
    so greedy decoding of a random model neither ties nor stalls on one token."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 and not any(s in name for s in skip):
                param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float32).to(param.dtype) * std)


def bpe_vocab_merges(backend) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocab and merges of a trained BPE ``tokenizers.Tokenizer``, to build a family's own tokenizer class
    (``Qwen2Tokenizer(vocab=..., merges=...)``, ``GPT2Tokenizer(...)``) that rebuilds identically when reloaded."""
    import json

    model = json.loads(backend.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def set_generation_ids(model, tokenizer) -> None:
    """Point ``model.generation_config`` at the tokenizer's pad / eos / bos ids (the text config gets them when the
    builder creates it)."""
    gen = model.generation_config
    gen.pad_token_id = tokenizer.pad_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.bos_token_id = tokenizer.bos_token_id


def wrap_tokenizer(tokenizer_class, backend, **kwargs):
    """Wrap a trained ``tokenizers.Tokenizer`` in ``tokenizer_class`` so that it survives ``save_pretrained`` /
    ``AutoTokenizer.from_pretrained`` unchanged.

    Generic backends (``PreTrainedTokenizerFast`` / ``TokenizersBackend``) take the object as it is. Model-specific
    classes (``GPT2Tokenizer``, ``CohereTokenizer``, ...) rebuild their own pipeline from ``vocab`` and ``merges`` when
    they load a checkpoint, so they are built the same way here (from the backend's vocab, merges, post-processor and
    added tokens); only use them with a byte-level backend whose pipeline matches the class's (GPT-2, RoBERTa/BART,
    Cohere). ``kwargs`` go to the class (special tokens, ``extra_special_tokens``, ``model_max_length``, ...).
    """
    import json

    from tokenizers import AddedToken
    from transformers import TokenizersBackend

    if tokenizer_class is TokenizersBackend or "__init__" not in tokenizer_class.__dict__:
        return tokenizer_class(tokenizer_object=backend, **kwargs)
    vocab, merges = bpe_vocab_merges(backend)
    added = {
        item["id"]: AddedToken(item["content"], special=item["special"], normalized=False)
        for item in json.loads(backend.to_str())["added_tokens"]
    }
    kwargs.setdefault("added_tokens_decoder", added)
    if backend.post_processor is not None:
        kwargs.setdefault("post_processor", backend.post_processor)
    return tokenizer_class(vocab=vocab, merges=merges, **kwargs)


def qwen2_tokenizer(
    special_tokens: Iterable[str],
    extra_special_tokens: dict[str, str] | None = None,
    eos_token: str = "<|im_end|>",
    pad_token: str = "<|endoftext|>",
    vocab_size: int = 700,
    **kwargs,
):
    """The real ``Qwen2Tokenizer`` class over a byte-level BPE vocab trained offline; ``special_tokens`` (ids 0..n-1,
    first is ``<|endoftext|>``) are registered as added special tokens so they never split. No BOS (Qwen style).
    It saves as a ``tokenizer.json`` that ``Qwen2Tokenizer`` rebuilds identically."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    specials = list(dict.fromkeys(special_tokens))
    vocab, merges = bpe_vocab_merges(train_bpe_tokenizer(specials, vocab_size=vocab_size, add_bos=False))
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=eos_token,
        pad_token=pad_token,
        extra_special_tokens=extra_special_tokens or {},
        model_max_length=32768,
        **kwargs,
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials], special_tokens=True)
    return tokenizer
