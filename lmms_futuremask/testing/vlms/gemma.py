"""Tiny Gemma-lineage checkpoints: Gemma 3 (``Gemma3ForConditionalGeneration`` + ``Gemma3Processor``) and
PaliGemma (``PaliGemmaForConditionalGeneration`` + ``PaliGemmaProcessor``), both with SigLIP vision towers.

Gemma 3: a 64 px image -> 8x8 SigLIP patches average-pooled to ``mm_tokens_per_image`` = 16 soft tokens, written as
``\\n\\n<start_of_image>`` + 16 x ``<image_soft_token>`` + ``<end_of_image>\\n\\n``. Its decoder has 3 layers
(sliding, sliding, full) with ``sliding_window`` = 16, and image blocks attend bidirectionally within themselves
(stock behaviour, from ``token_type_ids``).

PaliGemma: a 32 px image -> 4x4 = 16 ``<image>`` tokens, placed before a BOS and the prompt; the whole prefix
(images + prompt + "\\n", ``token_type_ids`` == 0) attends bidirectionally (stock behaviour).
"""

from __future__ import annotations

import torch

from . import TinyVLM
from ._common import set_generation_ids, spread_init, train_bpe_tokenizer, wrap_tokenizer

# --- Gemma 3 ----------------------------------------------------------------------------------------------------------

GEMMA3_IMAGE_SIZE = 64
GEMMA3_PATCH_SIZE = 8
GEMMA3_TOKENS_PER_IMAGE = 16
GEMMA3_SLIDING_WINDOW = 16
GEMMA3_LAYER_TYPES = ["sliding_attention", "sliding_attention", "full_attention"]

_GEMMA3_SPECIALS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]

#: google/gemma-3-4b-it's chat template (as shipped, whitespace-trimmed): images are ``<start_of_image>`` where they
#: stand in a turn, the system prompt is prefixed to the first user turn, ``<start_of_turn>model\n`` is the
#: generation prompt.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    '{%- else -%}{%- set first_user_prefix = "" -%}{%- set loop_messages = messages -%}{%- endif -%}'
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    '{{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}{%- endif -%}'
    "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}"
    '{%- else -%}{{ raise_exception("Invalid content type") }}{%- endif -%}'
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"
)


def _gemma_tokenizer(specials, extra, add_bos: bool):
    """Byte-level BPE in the generic fast class (Gemma's own ``GemmaTokenizer`` rebuilds a SentencePiece-style
    pipeline on load, which a byte-level vocab does not fit). Gemma ids: pad 0, eos 1, bos 2, unk 3."""
    from transformers import PreTrainedTokenizerFast

    return wrap_tokenizer(
        PreTrainedTokenizerFast,
        train_bpe_tokenizer(specials, bos="<bos>", add_bos=add_bos),
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        extra_special_tokens=extra,
        model_max_length=8192,
        padding_side="left",
    )


def _siglip(image_size: int, patch_size: int):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        vision_use_head=False,
    )


def build_gemma3(seed: int = 0):
    """Gemma 3 (SigLIP, 16 soft tokens an image, sliding + full layers, bidirectional image blocks)."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
    )

    torch.manual_seed(seed)
    # No automatic BOS: the chat template writes it (as the real template does).
    tokenizer = _gemma_tokenizer(
        _GEMMA3_SPECIALS,
        {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
        add_bos=False,
    )
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=len(GEMMA3_LAYER_TYPES),
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        max_position_embeddings=8192,
        sliding_window=GEMMA3_SLIDING_WINDOW,
        layer_types=list(GEMMA3_LAYER_TYPES),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    config = Gemma3Config(
        text_config=text,
        vision_config=_siglip(GEMMA3_IMAGE_SIZE, GEMMA3_PATCH_SIZE),
        mm_tokens_per_image=GEMMA3_TOKENS_PER_IMAGE,
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
        tie_word_embeddings=False,
    )
    model = Gemma3ForConditionalGeneration(config)
    spread_init(model, seed)
    set_generation_ids(model, tokenizer)
    image_processor = Gemma3ImageProcessor(size={"height": GEMMA3_IMAGE_SIZE, "width": GEMMA3_IMAGE_SIZE})
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=GEMMA3_TOKENS_PER_IMAGE,
        chat_template=GEMMA3_CHAT_TEMPLATE,
    )
    return model.eval(), processor


# --- PaliGemma --------------------------------------------------------------------------------------------------------

PALIGEMMA_IMAGE_SIZE = 32
PALIGEMMA_PATCH_SIZE = 8
PALIGEMMA_TOKENS_PER_IMAGE = (PALIGEMMA_IMAGE_SIZE // PALIGEMMA_PATCH_SIZE) ** 2

_PALIGEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]


def build_paligemma(seed: int = 0):
    """PaliGemma (SigLIP, image tokens then a bidirectional prefix): ``(model, processor)``."""
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = _gemma_tokenizer(_PALIGEMMA_SPECIALS, {"image_token": "<image>"}, add_bos=True)
    image_processor = SiglipImageProcessor(
        size={"height": PALIGEMMA_IMAGE_SIZE, "width": PALIGEMMA_IMAGE_SIZE},
        image_seq_length=PALIGEMMA_TOKENS_PER_IMAGE,
    )
    # The processor adds PaliGemma's 1024 <locXXXX> + 128 <segXXX> tokens to the tokenizer: size the vocab after it.
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    text = GemmaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=8192,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    config = PaliGemmaConfig(
        vision_config=_siglip(PALIGEMMA_IMAGE_SIZE, PALIGEMMA_PATCH_SIZE),
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vocab_size=len(tokenizer),
        projection_dim=64,
        hidden_size=64,
        tie_word_embeddings=False,
    )
    model = PaliGemmaForConditionalGeneration(config)
    spread_init(model, seed)
    set_generation_ids(model, tokenizer)
    return model.eval(), processor


FAMILIES: dict[str, TinyVLM] = {
    "gemma3": TinyVLM(
        name="gemma3",
        build=build_gemma3,
        image_placeholder="<start_of_image>",
        visual_tokens=("<image_soft_token>",),
        marker_tokens=("<start_of_image>", "<end_of_image>"),
        non_causal_stock_mask=True,
        layer_kinds=("sliding", "full"),
        video=False,
        notes=(
            "config.image_token_id (alias of image_token_index) = <image_soft_token>; boi_token_id/eoi_token_id = "
            "<start_of_image>/<end_of_image>. Gemma3Processor.image_token is <start_of_image> (the placeholder the "
            "chat template writes) but it is a text marker: each one is replaced by '\\n\\n<start_of_image>' + 16 "
            "<image_soft_token> + '<end_of_image>\\n\\n'. Decoder layers: sliding, sliding, full "
            "(sliding_window=16). The processor returns token_type_ids (1 on <image_soft_token>); with them the "
            "model lets each image's soft tokens attend bidirectionally within their block (stock, on prefill only). "
            "Weights untied (the real model ties them) so greedy decoding of the random model does not stall."
        ),
        extra={
            "tokens_per_image": GEMMA3_TOKENS_PER_IMAGE,
            "sliding_window": GEMMA3_SLIDING_WINDOW,
            "image_size": GEMMA3_IMAGE_SIZE,
            "layer_types": tuple(GEMMA3_LAYER_TYPES),
        },
    ),
    "paligemma": TinyVLM(
        name="paligemma",
        build=build_paligemma,
        image_placeholder="<image>",
        visual_tokens=("<image>",),
        marker_tokens=(),
        non_causal_stock_mask=True,
        layer_kinds=("full",),
        video=False,
        notes=(
            "No chat template: the prompt is '<image>' * n_images + text; the processor expands each <image> to 16, "
            "inserts <bos> after the last one and appends '\\n'. config.image_token_id (alias of "
            "image_token_index) = <image>. The processor returns token_type_ids (0 = prefix) and labels; the "
            "model makes the whole prefix bidirectional (block_sequence_ids 0 where token_type_ids == 0) on the "
            "first iteration only. Gemma (v1) text config: no sliding layers. PaliGemmaConfig sets "
            "text_config.use_bidirectional_attention=True, so GemmaAttention.is_causal is False (a None mask means "
            "bidirectional under sdpa). Pop 'labels' from a forward's inputs when no loss is wanted."
        ),
        extra={"tokens_per_image": PALIGEMMA_TOKENS_PER_IMAGE, "image_size": PALIGEMMA_IMAGE_SIZE},
    ),
}
