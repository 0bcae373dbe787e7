"""Tiny Mistral-Small-3.1 style checkpoint: ``Mistral3ForConditionalGeneration`` (Pixtral vision tower, 2x2 patch
merger, Mistral decoder with a sliding window) and the real ``PixtralProcessor`` / ``PixtralImageProcessor``.

A 64 px image is resized to a multiple of ``patch_size * spatial_merge_size`` = 16 px and becomes a 4x4 grid of
``[IMG]`` tokens, each row closed by ``[IMG_BREAK]`` and the last one by ``[IMG_END]`` (16 visual + 4 marker tokens).
The decoder's ``sliding_window`` (24) is shorter than any two-image prompt.
"""

from __future__ import annotations

import torch

from . import TinyVLM
from ._common import set_generation_ids, spread_init, train_bpe_tokenizer, wrap_tokenizer

IMAGE_SIZE = 64
PATCH_SIZE = 8
SPATIAL_MERGE = 2
#: [IMG] tokens of a square IMAGE_SIZE image: (64 / 16) ** 2.
TOKENS_PER_IMAGE = (IMAGE_SIZE // (PATCH_SIZE * SPATIAL_MERGE)) ** 2
SLIDING_WINDOW = 24

_SPECIALS = [
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "[INST]",
    "[/INST]",
    "[IMG]",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
]

#: A reduced copy of mistralai/Mistral-Small-3.1-24B-Instruct-2503's chat template (no default system prompt or
#: date): ``<s>[SYSTEM_PROMPT]...[/SYSTEM_PROMPT][INST]text[IMG]text[/INST]``; each image block becomes ``[IMG]``
#: where it stands in the user turn, and ``[/INST]`` already is the generation prompt.
MISTRAL3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- if messages[0]['content'] is string %}{%- set system_message = messages[0]['content'] %}"
    "{%- else %}{%- set system_message = messages[0]['content'][0]['text'] %}{%- endif %}"
    "{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if message['content'] is string %}{{- '[INST]' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST]' }}"
    "{%- for block in message['content'] %}"
    "{%- if block['type'] == 'text' %}{{- block['text'] }}"
    "{%- elif block['type'] in ['image', 'image_url'] %}{{- '[IMG]' }}"
    "{%- else %}{{- raise_exception('Only text and image blocks are supported in message content!') }}{%- endif %}"
    "{%- endfor %}{{- '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- if message['content'] is string %}{{- message['content'] + eos_token }}"
    "{%- else %}{{- message['content'][0]['text'] + eos_token }}{%- endif %}"
    "{%- else %}{{- raise_exception('Only user, system and assistant roles are supported!') }}{%- endif %}"
    "{%- endfor %}"
)


def build_tokenizer():
    """Byte-level BPE in the generic fast class (Mistral's own checkpoints ship a ``tokenizer.json`` that
    ``PixtralProcessor`` always loads as ``TokenizersBackend``). No automatic BOS: the chat template writes it."""
    from transformers import PreTrainedTokenizerFast

    return wrap_tokenizer(
        PreTrainedTokenizerFast,
        train_bpe_tokenizer(_SPECIALS, add_bos=False),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=4096,
        padding_side="left",
    )


def build_mistral3(seed: int = 0):
    """Mistral-Small-3.1 style (Pixtral tower, ``[IMG_BREAK]`` rows, sliding window 24): ``(model, processor)``."""
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralImageProcessor,
        PixtralProcessor,
        PixtralVisionConfig,
    )

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    vision = PixtralVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    text = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        sliding_window=SLIDING_WINDOW,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = Mistral3Config(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=SPATIAL_MERGE,
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    model = Mistral3ForConditionalGeneration(config)
    spread_init(model, seed)
    set_generation_ids(model, tokenizer)
    image_processor = PixtralImageProcessor(
        size={"longest_edge": IMAGE_SIZE}, patch_size={"height": PATCH_SIZE, "width": PATCH_SIZE}
    )
    processor = PixtralProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        spatial_merge_size=SPATIAL_MERGE,
        chat_template=MISTRAL3_CHAT_TEMPLATE,
    )
    return model.eval(), processor


FAMILIES: dict[str, TinyVLM] = {
    "mistral3": TinyVLM(
        name="mistral3",
        build=build_mistral3,
        image_placeholder="[IMG]",
        visual_tokens=("[IMG]",),
        marker_tokens=("[IMG_BREAK]", "[IMG_END]"),
        non_causal_stock_mask=False,
        layer_kinds=("sliding",),
        video=False,
        notes=(
            "config.image_token_id (alias of image_token_index) = [IMG]. The processor expands each [IMG] of the text "
            "to rows of [IMG] (64 px image: 4x4 = 16) each closed by [IMG_BREAK], the last by [IMG_END] (text "
            "tokens). Every decoder layer is a sliding-window layer (MistralConfig.sliding_window=24), shorter than "
            "a two-image prompt. Processor outputs: input_ids, attention_mask, pixel_values, image_sizes (the model "
            "needs image_sizes)."
        ),
        extra={"tokens_per_image": TOKENS_PER_IMAGE, "sliding_window": SLIDING_WINDOW, "image_size": IMAGE_SIZE},
    ),
}
