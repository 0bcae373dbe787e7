"""Tiny Janus(-Pro) checkpoint: ``JanusForConditionalGeneration`` (SigLIP-style understanding encoder + MLP aligner,
a Llama decoder, and a small VQ-VAE image-generation branch that text generation does not use) with the real
``JanusProcessor`` / ``JanusImageProcessor``. ``AutoModelForImageTextToText`` maps ``janus`` to it.

A 32 px image -> 4x4 = 16 ``<image_placeholder>`` tokens between ``<begin_of_image>`` and ``<end_of_image>``.
"""

from __future__ import annotations

import torch

from . import TinyVLM
from ._common import set_generation_ids, spread_init, train_bpe_tokenizer, wrap_tokenizer

IMAGE_SIZE = 32
PATCH_SIZE = 8
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2

BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"  # <｜begin▁of▁sentence｜>
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"  # <｜end▁of▁sentence｜>
PAD = "<\uff5c\u2581pad\u2581\uff5c>"  # <｜▁pad▁｜>

_SPECIALS = [BOS, EOS, PAD, "<image_placeholder>", "<begin_of_image>", "<end_of_image>", "<|User|>", "<|Assistant|>"]

#: deepseek-community/Janus-Pro-1B's chat template, reduced (same layout): ``<|User|>: `` turns separated by "\n\n",
#: images written ``<image_placeholder>`` where they stand (newline-separated from neighbouring blocks), text blocks
#: joined by a space, ``<|Assistant|>:`` as the generation prompt.
JANUS_CHAT_TEMPLATE = (
    "{%- set seps = ['\n\n', '" + EOS + "'] -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] | lower == 'user' -%}{{ '<|User|>: ' }}"
    "{%- elif message['role'] | lower == 'assistant' -%}{{ '<|Assistant|>: ' }}"
    "{%- else -%}{{ message['role'].capitalize() + ': ' }}{%- endif -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}"
    "{%- for content in message['content'] -%}"
    "{%- if content['type'] == 'image' -%}"
    "{%- if not loop.first -%}{{ '\n' }}{%- endif -%}{{ '<image_placeholder>' }}"
    "{%- if not loop.last -%}{{ '\n' }}{%- endif -%}"
    "{%- elif content['type'] == 'text' -%}"
    "{%- set text = content['text'] -%}"
    "{%- if loop.first -%}{%- set text = text.lstrip() -%}{%- endif -%}"
    "{%- if loop.last -%}{%- set text = text.rstrip() -%}{%- endif -%}"
    "{%- if not loop.first and message['content'][loop.index0 - 1]['type'] == 'text' -%}{{ ' ' + text }}"
    "{%- else -%}{{ text }}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if not loop.last or add_generation_prompt -%}"
    "{%- if message['role'] | lower == 'user' -%}{{ seps[0] }}{%- else -%}{{ seps[1] }}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|Assistant|>:' }}{%- endif -%}"
)


def build_tokenizer():
    """Byte-level BPE in the generic fast class (Janus ships ``LlamaTokenizerFast``, whose SentencePiece-style
    pipeline a byte-level vocab does not fit). Adds BOS to every encoding, as Janus's tokenizer does."""
    from transformers import PreTrainedTokenizerFast

    return wrap_tokenizer(
        PreTrainedTokenizerFast,
        train_bpe_tokenizer(_SPECIALS, bos=BOS, add_bos=True),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens={
            "image_token": "<image_placeholder>",
            "boi_token": "<begin_of_image>",
            "eoi_token": "<end_of_image>",
        },
        model_max_length=16384,
        padding_side="left",
    )


def build_janus(seed: int = 0):
    """Janus(-Pro) (SigLIP-style encoder + aligner, Llama decoder, VQ branch unused): ``(model, processor)``."""
    from transformers import (
        JanusConfig,
        JanusForConditionalGeneration,
        JanusImageProcessor,
        JanusProcessor,
        JanusVisionConfig,
        JanusVQVAEConfig,
        LlamaConfig,
    )

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    vision = JanusVisionConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        mlp_ratio=2.0,
        projection_dim=64,  # the aligner maps to the decoder's hidden size
        depth=2,
        num_image_tokens=TOKENS_PER_IMAGE,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=64,
        latent_channels=8,
        base_channels=32,  # GroupNorm(32 groups) needs multiples of 32
        channel_multiplier=[1, 1],
        num_res_blocks=1,
        projection_dim=64,
        image_token_embed_dim=64,
        num_hidden_layers=1,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16384,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = JanusConfig(
        text_config=text,
        vision_config=vision,
        vq_config=vq,
        image_token_id=tokenizer.convert_tokens_to_ids("<image_placeholder>"),
        tie_word_embeddings=False,
    )
    model = JanusForConditionalGeneration(config)
    spread_init(model, seed, skip=("vision", "vqmodel"))
    set_generation_ids(model, tokenizer)
    image_processor = JanusImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = JanusProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=TOKENS_PER_IMAGE,
        chat_template=JANUS_CHAT_TEMPLATE,
    )
    return model.eval(), processor


FAMILIES: dict[str, TinyVLM] = {
    "janus": TinyVLM(
        name="janus",
        build=build_janus,
        image_placeholder="<image_placeholder>",
        visual_tokens=("<image_placeholder>",),
        marker_tokens=("<begin_of_image>", "<end_of_image>"),
        non_causal_stock_mask=False,
        layer_kinds=("full",),
        video=False,
        notes=(
            "config.image_token_id (top level, no alias) = <image_placeholder>. The processor replaces each "
            "<image_placeholder> of the text by <begin_of_image> + 16 x <image_placeholder> + <end_of_image> "
            "(the same string is placeholder and visual token). Loads with AutoModelForImageTextToText "
            "(JanusForConditionalGeneration). The tokenizer adds BOS. Weights untied (the real model ties them)."
        ),
        extra={"tokens_per_image": TOKENS_PER_IMAGE, "image_size": IMAGE_SIZE},
    ),
}
