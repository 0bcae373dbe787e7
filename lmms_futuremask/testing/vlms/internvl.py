"""A tiny HF-native InternVL (InternVL3-hf layout) checkpoint: InternViT-like tower, pixel-shuffle projector, Qwen2
decoder, ``GotOcr2ImageProcessor`` dynamic tiling, ``InternVLVideoProcessor`` and ``InternVLProcessor``.

32 px tiles with patch 4 -> 8x8 patches, downsample ratio 0.5 -> 16 ``<IMG_CONTEXT>`` tokens a tile. Tiling is on
(``crop_to_patches``, the processor default) with ``max_patches=2``: a square image is one tile (16 tokens), a wide
or tall one two tiles plus a thumbnail (48 tokens). Each image is framed ``<img> ... </img>``; each video frame is
``FrameN: <img>`` + 16 tokens + ``</img>``, frames joined by newlines.
"""

from __future__ import annotations

import torch

from . import TinyVLM
from ._common import qwen2_tokenizer, set_generation_ids, spread_init

TILE, PATCH, DOWNSAMPLE = 32, 4, 0.5
IMAGE_SEQ_LENGTH = int((TILE // PATCH) ** 2 * DOWNSAMPLE**2)
MAX_PATCHES = 2

_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
    "<video>",
]

#: OpenGVLab/InternVL3-*-hf chat template, reduced: the default (Chinese) system prompt is left out; an image is
#: ``<IMG_CONTEXT>\n`` and a video ``<video>\n`` in place, which the processor expands.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_internvl(seed: int = 0):
    """HF-native InternVL3 (dynamic tiling, 16 ``<IMG_CONTEXT>`` tokens a tile, Qwen2 decoder)."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
        Qwen2Config,
    )

    torch.manual_seed(seed)
    tokenizer = qwen2_tokenizer(
        _SPECIALS,
        {
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    vision = InternVLVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=[TILE, TILE],
        patch_size=[PATCH, PATCH],
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=IMAGE_SEQ_LENGTH,
        downsample_ratio=DOWNSAMPLE,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    model = InternVLForConditionalGeneration(config)
    spread_init(model, seed, skip=("vision_tower",))
    set_generation_ids(model, tokenizer)
    model.eval()
    image_processor = GotOcr2ImageProcessor(
        size={"height": TILE, "width": TILE},
        crop_to_patches=True,
        min_patches=1,
        max_patches=MAX_PATCHES,
    )
    video_processor = InternVLVideoProcessor(size={"height": TILE, "width": TILE})
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_length=IMAGE_SEQ_LENGTH,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    return model, processor


FAMILIES: dict[str, TinyVLM] = {
    "internvl": TinyVLM(
        name="internvl",
        build=build_internvl,
        image_placeholder="<IMG_CONTEXT>",
        visual_tokens=("<IMG_CONTEXT>",),
        marker_tokens=("<img>", "</img>"),
        video=True,
        notes=(
            "An image is <img> + 16 <IMG_CONTEXT> per tile + </img> (one tile for a square-ish image, two tiles + "
            "a thumbnail = 48 tokens for aspect >= ~1.5); the chat template writes '<IMG_CONTEXT>\\n' per image and "
            "'<video>\\n' per video; a video becomes 'Frame1: <img>' + 16 <IMG_CONTEXT> + '</img>' lines (frames "
            "are fed as pixel_values too; <IMG_CONTEXT> is the only visual id, there is no video id). "
            "config.image_token_id (top level). The processor's image_token_ids (for mm_token_type_ids) include "
            "<img> and </img>; _get_num_multimodal_tokens counts visual tokens + 2. Chat template reduced: no "
            "default system prompt."
        ),
        extra={"num_multimodal_tokens": "visual+2"},
    ),
}
